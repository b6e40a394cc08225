"""The collective weight channel (train.weight_sync=collective) on CPU: gloo pairs between a real Ray actor
and the publishing process, through the same Coordinator the training run uses."""

from __future__ import annotations

import pytest
import ray
import torch

from arbor.core.config import load_config
from arbor.core.errors import ConfigError
from arbor.launch.distributed.collective import CollectiveWeightChannel, empty_buffers, flatten, unflatten
from arbor.launch.distributed.coordinator import Coordinator
from tests.conftest import DEFAULT_CONFIG


def _state(seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "embed.weight": torch.randn(7, 5, generator=g),
        "layer.bias": torch.randn(5, generator=g),
        "steps": torch.randint(0, 100, (3,), generator=g),  # a second dtype gets its own buffer
        "value_head.w": torch.randn(1, 5, generator=g).to(torch.bfloat16),
    }


def _equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]) for k in a)


def test_flatten_round_trip_keeps_names_shapes_and_dtypes():
    state = _state(0)
    layout, flats = flatten(state, "cpu")
    assert [f.dtype for f in flats] == [torch.float32, torch.int64, torch.bfloat16]
    assert _equal(unflatten(layout, flats), state)
    # receive buffers sized from the layout alone hold exactly those bytes
    buffers = empty_buffers(layout, "cpu")
    assert [(b.dtype, b.numel()) for b in buffers] == [(f.dtype, f.numel()) for f in flats]


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR")
    yield
    ray.shutdown()


def test_actor_pulls_newest_version_over_gloo_and_a_restart_joins_again(local_ray):
    @ray.remote(num_cpus=0)
    class Puller:
        def __init__(self, coordinator):
            self.channel = CollectiveWeightChannel(coordinator, name="puller")

        def poll(self, have: int):
            poll = self.channel.poll(have)
            return (
                poll.version,
                None if poll.state is None else {k: v.clone() for k, v in poll.state.items()},
                poll.stop,
            )

    coordinator = ray.remote(Coordinator).options(num_cpus=0).remote()
    learner = CollectiveWeightChannel(coordinator, name="learner")
    puller = Puller.remote(coordinator)
    try:
        assert ray.get(puller.poll.remote(-1)) == (-1, None, False)  # nothing published: no server contacted
        learner.publish(0, _state(0))
        version, state, stop = ray.get(puller.poll.remote(-1))
        assert (version, stop) == (0, False) and _equal(state, _state(0))
        assert ray.get(puller.poll.remote(0)) == (0, None, False)  # up to date: nothing moves
        served = learner.server.served
        learner.publish(1, _state(1))
        learner.publish(2, _state(2))
        version, state, _ = ray.get(puller.poll.remote(0))  # too busy for version 1: it gets the newest
        assert version == 2 and _equal(state, _state(2))
        assert learner.server.served == served + 1

        # An actor that took a ticket and died before its half of the group (a ghost) holds up nobody.
        ghost = learner.server.store.add("tickets", 1)
        learner.server.store.set(f"join/{ghost}", "ghost")
        ray.kill(puller)  # a new process takes a new ticket and its own pair; the learner keeps serving
        again = Puller.remote(coordinator)
        version, state, _ = ray.get(again.poll.remote(-1), timeout=120)  # (a hang guard, not a timing)
        assert version == 2 and _equal(state, _state(2))
        assert learner.server.accepted == 3
        # the restarted actor's name replaced its dead pair: only the live one is kept
        assert list(learner.server.pairs) == [3]
        assert any("puller joined again" in why for why in learner.server.failed)

        ray.get(coordinator.request_stop.remote())
        assert ray.get(again.poll.remote(-1)) == (2, None, True)  # a stop is not worth a transfer
    finally:
        learner.close()


def test_weights_that_change_shape_mid_run_are_refused(local_ray):
    coordinator = ray.remote(Coordinator).options(num_cpus=0).remote()
    learner = CollectiveWeightChannel(coordinator, name="learner")
    try:
        learner.publish(0, _state(0))
        wrong = _state(1) | {"layer.bias": torch.zeros(6)}
        with pytest.raises(ValueError, match="changed names, shapes or dtypes"):
            learner.publish(1, wrong)
        assert ray.get(coordinator.poll.remote(-1)).version == 0  # the bad version was never announced
    finally:
        learner.close()


def test_unknown_weight_sync_is_a_config_error():
    with pytest.raises(ConfigError, match="train.weight_sync"):
        load_config(DEFAULT_CONFIG, ["train.weight_sync=nccl"])
