"""The coordinator actor: the newest weights (as an object ref), the stop flag and the actors' board.

Rollout actors poll it between search rounds (pull with version: "anything newer than v?"); the learner's
rank 0 announces each publication here. Each actor's problem cursor lives in the replay buffer, recorded
with the inserts it accepts, so the coordinator holds nothing a checkpoint needs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import ray

from arbor.core.channels import ActorBoard


@dataclass(frozen=True)
class ServerAddress:
    """Where the collective channel's weight server listens (set once by learner rank 0)."""

    host: str
    port: int
    backend: str  # gloo | nccl


@dataclass(frozen=True)
class CoordinatorPoll:
    """An actor's poll: the newest version, its object ref when newer (object-store path), the stop flag, and
    the collective channel's server (None on the object-store path)."""

    version: int
    weights: list[ray.ObjectRef] | None  # [ref]: a nested ref travels as is, not resolved
    stop: bool
    server: ServerAddress | None


@dataclass(frozen=True)
class BoardSnapshot:
    """What the driver reads for its logs: the newest version, every actor's totals and the events."""

    version: int
    stats: dict[str, dict[str, Any]]
    events: list[dict[str, Any]]
    stop: bool


class Coordinator(ActorBoard):
    """Ray actor (``ray.remote(Coordinator)``): latest weights, stop flag and the actors' board."""

    def __init__(self) -> None:
        super().__init__()
        self.version = -1  # nothing published yet
        self.weights: list[ray.ObjectRef] = []  # the ref is held here, so the object lives until replaced
        self.stop = False
        self.weight_server: ServerAddress | None = None

    def publish(self, version: int, weights: list[ray.ObjectRef]) -> None:
        if version <= self.version:
            raise ValueError(f"published version {version} is not newer than {self.version}")
        self.version, self.weights = version, list(weights)

    def event(self, kind: str, **fields: Any) -> None:
        """An actor's event, stamped with the newest version published when it arrived (a restarted actor's
        ``actor_restarted`` carries the version it pulled: the two show it searches on current weights)."""
        super().event(kind, published_version=self.version, **fields)

    def serve_weights(self, address: ServerAddress) -> None:
        self.weight_server = address

    def poll(self, have_version: int) -> CoordinatorPoll:
        newer = self.version > have_version and bool(self.weights)
        return CoordinatorPoll(self.version, self.weights if newer else None, self.stop, self.weight_server)

    def request_stop(self, stop: bool = True) -> None:
        self.stop = stop

    def snapshot(self) -> BoardSnapshot:
        return BoardSnapshot(self.version, dict(self.stats), list(self.events), self.stop)


class CoordinatorReporter:
    """An actor's :class:`~arbor.core.channels.Reporter` over the coordinator's handle (fire and forget)."""

    def __init__(self, coordinator: Any) -> None:
        self.coordinator = coordinator

    def report(self, actor: str, stats: dict[str, Any], tree: dict | None = None) -> None:
        self.coordinator.report.remote(actor, stats, tree)

    def event(self, kind: str, **fields: Any) -> None:
        self.coordinator.event.remote(kind, **fields)
