"""The two small interfaces where actors and learner meet (they never import each other).

- **Weight channel**: the learner publishes ``(version, weights)``; actors *pull with version* between
  search rounds: they ask "anything newer than v?" and fetch only then, so a busy actor never misses an
  update (RLlib once silently dropped weight pushes to busy workers). On CPU the weights travel as one
  ``ray.put`` object that every actor reads from the object store; the learner's ref is held by the
  :class:`Coordinator`, so the object lives exactly until the next publication replaces it.
- **Buffer client**: ``insert`` blocks while the replay buffer's rate limiter says so (backpressure,
  nothing dropped); ``sample`` returns ``None`` after a timeout so the caller can check for shutdown.

The :class:`Coordinator` actor also carries the stop flag and the actors' running statistics. (Each
actor's problem cursor lives in the replay buffer, recorded with the inserts it accepts.)
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import ray
import torch

from arbor.core.samples import StepSample

VALUE_PREFIX = "value_head."  # key prefix of the value head's tensors in a published state dict


def split_published(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(model state, value head state) from a published state dict."""
    model = {k: v for k, v in state.items() if not k.startswith(VALUE_PREFIX)}
    head = {k[len(VALUE_PREFIX) :]: v for k, v in state.items() if k.startswith(VALUE_PREFIX)}
    return model, head


def state_bytes(state: dict[str, torch.Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in state.values())


class Coordinator:
    """Ray actor: latest weights (as an object ref), stop flag and actor statistics."""

    def __init__(self):
        self.version = -1  # nothing published yet
        self.weights: list[ray.ObjectRef] = []  # [ref]: a nested ref is passed through, not resolved
        self.stop = False
        self.stats: dict[str, dict[str, Any]] = {}
        self.events: list[dict[str, Any]] = []
        self.trees: list[dict] = []  # recent finished trees (JSON) for the dashboards
        self.weight_server: dict[str, Any] | None = None  # train.weight_sync=collective: where actors pull

    def publish(self, version: int, weights: list[ray.ObjectRef]) -> None:
        if version <= self.version:
            raise ValueError(f"published version {version} is not newer than {self.version}")
        self.version, self.weights = version, list(weights)

    def serve_weights(self, address: dict[str, Any]) -> None:
        """The collective channel's server address (host, port, backend), set once by learner rank 0."""
        self.weight_server = dict(address)

    def poll(self, have_version: int) -> dict[str, Any]:
        """What an actor needs between rounds: the newest version, its weights if newer (object-store path),
        the stop flag, and where the collective channel's server is (None on the object-store path)."""
        newer = self.version > have_version and bool(self.weights)
        return {
            "version": self.version,
            "weights": self.weights if newer else None,
            "stop": self.stop,
            "server": self.weight_server,
        }

    def request_stop(self, stop: bool = True) -> None:
        self.stop = stop

    def report(self, actor: str, stats: dict[str, Any], tree: dict | None = None) -> None:
        """An actor finished a tree: its running totals (and now and then the tree, for the dashboards)."""
        self.stats[actor] = stats
        if tree is not None:
            self.trees = (self.trees + [tree])[-4:]

    def event(self, kind: str, **fields: Any) -> None:
        self.events.append({"kind": kind, "time": time.time(), **fields})

    def snapshot(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "stats": dict(self.stats),
            "events": list(self.events),
            "stop": self.stop,
        }

    def latest_tree(self) -> dict | None:
        return self.trees[-1] if self.trees else None


class WeightChannel:
    """Publisher and puller over a :class:`Coordinator` handle (CPU path: the Ray object store)."""

    device = "cpu"  # where the published weights must be: ray.put takes CPU tensors

    def __init__(self, coordinator: Any):
        self.coordinator = coordinator

    def close(self) -> None:
        """Nothing to release: the coordinator holds the one published object."""

    def publish(self, version: int, state: dict[str, torch.Tensor]) -> dict[str, float]:
        """Put ``state`` in the object store once and announce it as ``version``; returns time and bytes."""
        t0 = time.perf_counter()
        ref = ray.put(state)
        ray.get(self.coordinator.publish.remote(version, [ref]))
        return {"sync/publish_seconds": time.perf_counter() - t0, "sync/bytes": float(state_bytes(state))}

    def poll(self, have_version: int) -> tuple[int, dict[str, torch.Tensor] | None, bool]:
        """(latest version, its weights if newer than ``have_version`` else None, stop requested)."""
        reply = ray.get(self.coordinator.poll.remote(have_version))
        state = ray.get(reply["weights"][0]) if reply["weights"] else None
        return reply["version"], state, reply["stop"]


def weight_channel(mode: str, coordinator: Any, *, learner_on_gpu: bool, actors_on_gpu: bool, name: str = "") -> Any:
    """The channel ``train.weight_sync`` names: ``object_store`` (:class:`WeightChannel`) or ``collective``
    (:class:`core.collective.CollectiveWeightChannel`: nccl when learner and actors both have GPUs, else gloo)."""
    if mode == "object_store":
        return WeightChannel(coordinator)
    from arbor.core.collective import CollectiveWeightChannel, weight_backend

    backend, device = weight_backend(learner_on_gpu, actors_on_gpu)
    return CollectiveWeightChannel(coordinator, backend, device, name=name)


class BufferClient:
    """Blocking insert and timed sample over the replay buffer actor's handle."""

    def __init__(self, buffer: Any):
        self.buffer = buffer

    def insert(self, samples: Sequence[StepSample], cursor: tuple[str, int] | None = None) -> bool:
        """Returns once the buffer took every sample (it waits while the rate limiter blocks inserts);
        False when the buffer has closed (shutdown) and took nothing."""
        return bool(ray.get(self.buffer.insert.remote(list(samples), False, cursor)))

    def sample(self, n: int, version: int, timeout_s: float) -> list[StepSample] | None:
        return ray.get(self.buffer.sample.remote(n, version, timeout_s))
