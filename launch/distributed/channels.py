"""The weight channels and the buffer client over Ray (the interfaces are ``arbor.core.channels``).

- :class:`ObjectStoreChannel` (``train.weight_sync=object_store``): the weights travel as one ``ray.put``
  object that every actor reads from the object store; the coordinator holds its ref, so the object lives
  exactly until the next publication replaces it.
- ``train.weight_sync=collective``: :class:`~arbor.launch.distributed.collective.CollectiveWeightChannel`,
  torch.distributed pairs (nccl between GPUs, gloo on CPU).
- :class:`RayBufferClient`: an actor's blocking insert into the replay service.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import ray
import torch

from arbor.core.channels import BufferClient, WeightChannel, WeightPoll, state_bytes
from arbor.core.samples import StepSample


class ObjectStoreChannel(WeightChannel):
    """Publisher and puller over a coordinator handle, through the Ray object store."""

    device = "cpu"  # ray.put takes CPU tensors

    def __init__(self, coordinator: Any):
        self.coordinator = coordinator

    def publish(self, version: int, state: dict[str, torch.Tensor]) -> dict[str, float]:
        """Put ``state`` in the object store once and announce it as ``version``; returns time and bytes."""
        t0 = time.perf_counter()
        ref = ray.put(state)
        ray.get(self.coordinator.publish.remote(version, [ref]))
        return {"sync/publish_seconds": time.perf_counter() - t0, "sync/bytes": float(state_bytes(state))}

    def poll(self, have_version: int) -> WeightPoll:
        reply = ray.get(self.coordinator.poll.remote(have_version))
        state = ray.get(reply.weights[0]) if reply.weights else None
        return WeightPoll(reply.version, state, reply.stop)


def weight_channel(
    mode: str, coordinator: Any, *, learner_on_gpu: bool, actors_on_gpu: bool, name: str = ""
) -> WeightChannel:
    """The channel ``train.weight_sync`` names: ``object_store`` or ``collective`` (nccl when learner and actors
    both have GPUs, else gloo)."""
    if mode == "object_store":
        return ObjectStoreChannel(coordinator)
    from arbor.launch.distributed.collective import CollectiveWeightChannel, weight_backend

    backend, device = weight_backend(learner_on_gpu, actors_on_gpu)
    return CollectiveWeightChannel(coordinator, backend, device, name=name)


class RayBufferClient(BufferClient):
    """Blocking insert into the replay service actor (it waits while its rate limiter blocks inserts)."""

    def __init__(self, service: Any):
        self.service = service

    def begin(self, trees: Sequence[str]) -> None:
        ray.get(self.service.begin.remote(list(trees)))

    def insert(
        self, samples: Sequence[StepSample], cursor: tuple[str, int] | None = None, tree: str | None = None
    ) -> bool:
        return bool(ray.get(self.service.insert.remote(list(samples), False, cursor, tree)))

    def cursors(self) -> dict[str, int]:
        return ray.get(self.service.cursors.remote())
