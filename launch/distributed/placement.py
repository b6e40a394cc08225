"""Where the run's processes go: start or join Ray, check the cluster can hold the request, place the bundles.

One placement group holds a bundle per rollout actor (``resources.actor_cpus``, ``actor_gpus``, fractional
GPUs allowed, ``actor_resources`` for custom node labels), one for the replay buffer and coordinator, and one
per learner rank (``learner_cpus``, ``learner_gpus``, ``learner_resources``), under ``resources.strategy``.
Without ``resources.address`` or ``$RAY_ADDRESS`` Ray starts in this process; with them (as under
``ray job submit``) the run joins the cluster.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections import Counter
from collections.abc import Iterator

import ray
from ray.util.placement_group import PlacementGroup, placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from arbor.core.config import ArborConfig
from arbor.core.errors import ConfigError


def start_ray(cfg: ArborConfig) -> bool:
    """Join the cluster at ``resources.address`` / $RAY_ADDRESS, or start one here; True if we started it."""
    if ray.is_initialized():
        return False
    address = cfg.resources.address or os.environ.get("RAY_ADDRESS")
    if address:
        # No runtime_env here: inside `ray job submit` the job's own (working_dir, py_modules) must stay in
        # force; the workers' environment variables are set per actor and merge into it.
        ray.init(address=address, logging_level="WARNING")
        return True
    r = cfg.resources
    cpus_needed = r.rollout_actors * r.actor_cpus + r.learner_ranks * r.learner_cpus + r.buffer_cpus
    with loopback_only():
        ray.init(
            num_cpus=max(os.cpu_count() or 1, math.ceil(cpus_needed)),  # logical CPUs: enough for the bundles
            include_dashboard=False,
            logging_level="WARNING",
        )
    return True


@contextlib.contextmanager
def loopback_only() -> Iterator[None]:
    """The Ray started here listens on 127.0.0.1 only (GCS, raylet, object manager, workers, metrics agent).

    ``ray.init(_node_ip_address="127.0.0.1")`` does not do it: Ray swaps a loopback node address for the
    host's reachable one. Its single-machine mode (the one it uses on macOS, switched by
    ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``) takes the loopback address as the node's and binds every server
    to it. The processes ``ray.init`` starts inherit the variable; this process's own lookup reads the
    constant, so both are set while Ray starts and put back after (a later join of a real cluster from the
    same process is unaffected). Verified with ``ss -ltn`` in tests/integration/test_interrupt.py."""
    from ray._private import ray_constants

    name = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
    saved_env, saved_flag = os.environ.get(name), ray_constants.ENABLE_RAY_CLUSTER
    os.environ[name], ray_constants.ENABLE_RAY_CLUSTER = "0", False
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = saved_flag
        if saved_env is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = saved_env


def bundles(cfg: ArborConfig) -> list[dict[str, float]]:
    """Placement-group bundles: one per rollout actor, one for the buffer (and coordinator), one per rank."""
    r = cfg.resources

    def bundle(cpus: float, gpus: float, extra: dict[str, float]) -> dict[str, float]:
        b = {"CPU": cpus} if cpus else {}
        if gpus:
            b["GPU"] = gpus
        return b | {k: float(v) for k, v in extra.items()}

    out = [bundle(r.actor_cpus, r.actor_gpus, r.actor_resources) for _ in range(r.rollout_actors)]
    out.append(bundle(r.buffer_cpus, 0, {}))
    out += [bundle(r.learner_cpus, r.learner_gpus, r.learner_resources) for _ in range(r.learner_ranks)]
    return out


def check_resources(cfg: ArborConfig) -> None:
    """ConfigError when the cluster cannot hold the request at all (e.g. more GPUs than exist)."""
    have = ray.cluster_resources()
    need: Counter = Counter()
    for b in bundles(cfg):
        need.update(b)
    r = cfg.resources
    keys = {
        "GPU": f"resources.rollout_actors ({r.rollout_actors}) x resources.actor_gpus ({r.actor_gpus}) + "
        f"resources.learner_ranks ({r.learner_ranks}) x resources.learner_gpus ({r.learner_gpus})",
        "CPU": f"resources.rollout_actors x resources.actor_cpus + resources.learner_ranks x "
        f"resources.learner_cpus + resources.buffer_cpus ({r.buffer_cpus})",
    }
    for name, amount in need.items():
        if amount > have.get(name, 0.0) + 1e-9:
            source = keys.get(name, "resources.actor_resources / resources.learner_resources")
            raise ConfigError(
                f"the run asks for {amount:g} {name} ({source}) but the Ray cluster has {have.get(name, 0.0):g}"
            )


class Placement:
    """The run's placement group, and the scheduling strategy of each role's bundle."""

    def __init__(self, cfg: ArborConfig, name: str):
        r = cfg.resources
        wanted = bundles(cfg)
        self.group: PlacementGroup = placement_group(wanted, strategy=r.strategy, name=name)
        ready, _ = ray.wait([self.group.ready()], timeout=r.placement_timeout_s)
        if not ready:
            ray.util.remove_placement_group(self.group)
            raise ConfigError(
                f"the Ray cluster could not place {len(wanted)} bundles with resources.strategy={r.strategy} "
                f"within resources.placement_timeout_s={r.placement_timeout_s:g} s (not enough nodes or resources)"
            )
        self.actors = r.rollout_actors

    def _at(self, index: int) -> PlacementGroupSchedulingStrategy:
        return PlacementGroupSchedulingStrategy(placement_group=self.group, placement_group_bundle_index=index)

    def actor(self, i: int) -> PlacementGroupSchedulingStrategy:
        return self._at(i)

    def buffer(self) -> PlacementGroupSchedulingStrategy:
        return self._at(self.actors)

    def rank(self, i: int) -> PlacementGroupSchedulingStrategy:
        return self._at(self.actors + 1 + i)

    def remove(self) -> None:
        ray.util.remove_placement_group(self.group)
