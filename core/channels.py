"""The small interfaces where rollout actors, the replay buffer and the learner meet (they never import each other).

- :class:`WeightChannel`: the learner publishes ``(version, weights)``; actors *pull with version* between
  search rounds: they ask "anything newer than v?" and fetch only then, so a busy actor never misses an
  update (RLlib once silently dropped weight pushes to busy workers). Implementations: in-process
  (:class:`InProcessWeights`, ``train.mode=local``), the Ray object store and torch.distributed pairs
  (``arbor.launch.distributed``).
- :class:`BufferClient`: how an actor inserts a finished tree's samples (blocking while the buffer applies
  backpressure) and reads back where its shard stopped.
- :class:`Reporter`: where an actor sends its running totals and events; :class:`ActorBoard` is the plain
  record of them that the coordinator and the local runtime keep.
- The published weight format: the policy's state dict plus the value head's under ``VALUE_PREFIX``.

Nothing here imports Ray or torch.distributed.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

from arbor.core.samples import StepSample

VALUE_PREFIX = "value_head."  # key prefix of the value head's tensors in a published state dict
RECENT_TREES = 4  # finished trees (JSON) a board keeps for the dashboards


def published_state(
    model_state: dict[str, torch.Tensor],
    head_state: dict[str, torch.Tensor],
    device: str = "cpu",
    dtype: str = "float32",
) -> dict[str, torch.Tensor]:
    """The one state dict a channel carries: copies of the policy's tensors, floating ones in ``dtype`` (the
    actors' ``model.dtype``), and the value head's (float32) under ``VALUE_PREFIX``, on ``device`` (CPU for
    the object store, the learner's GPU for nccl)."""
    cast = getattr(torch, str(dtype))
    state = {
        k: v.detach().to(device, cast if v.is_floating_point() else v.dtype, copy=True) for k, v in model_state.items()
    }
    return state | {VALUE_PREFIX + k: v.detach().to(device, copy=True) for k, v in head_state.items()}


def split_published(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(model state, value head state) from a published state dict."""
    model = {k: v for k, v in state.items() if not k.startswith(VALUE_PREFIX)}
    head = {k[len(VALUE_PREFIX) :]: v for k, v in state.items() if k.startswith(VALUE_PREFIX)}
    return model, head


def state_bytes(state: dict[str, torch.Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in state.values())


@dataclass(frozen=True)
class WeightPoll:
    """What an actor learns when it polls: the newest version, its weights if newer than what it has."""

    version: int  # the newest published version (-1: nothing published yet)
    state: dict[str, torch.Tensor] | None  # the weights of ``version`` when newer than the poller's, else None
    stop: bool  # the run asked its actors to stop


class WeightChannel(Protocol):
    """Publish on the learner (rank 0), poll on the actors. ``close`` releases what the channel holds; the
    default has nothing to release. ``device`` is where published tensors must be."""

    device: str

    def publish(self, version: int, state: dict[str, torch.Tensor]) -> dict[str, float]:
        """Make ``state`` the newest weights, as ``version``; returns timing and size metrics (``sync/...``)."""
        ...

    def poll(self, have_version: int) -> WeightPoll:
        """The newest version, and its weights if it is newer than ``have_version``."""
        ...

    def close(self) -> None:
        return None


class InProcessWeights(WeightChannel):
    """Learner and actors in one process (``train.mode=local``): publishing keeps one copy of the weights."""

    device = "cpu"

    def __init__(self) -> None:
        self.version = -1
        self.state: dict[str, torch.Tensor] | None = None
        self.stop = False

    def publish(self, version: int, state: dict[str, torch.Tensor]) -> dict[str, float]:
        if version <= self.version:
            raise ValueError(f"published version {version} is not newer than {self.version}")
        self.version, self.state = version, state
        return {"sync/publish_seconds": 0.0, "sync/bytes": float(state_bytes(state))}

    def poll(self, have_version: int) -> WeightPoll:
        newer = self.version > have_version and self.state is not None
        return WeightPoll(self.version, self.state if newer else None, self.stop)


class BufferClient(Protocol):
    """An actor's handle on the replay buffer."""

    def begin(self, trees: Sequence[str]) -> None:
        """Announce the trees (ids ``ACTOR/CURSOR``) about to be searched, for the buffer's tree ledger."""
        ...

    def insert(
        self, samples: Sequence[StepSample], cursor: tuple[str, int] | None = None, tree: str | None = None
    ) -> bool:
        """Returns once the buffer took every sample (waiting while it applies backpressure); False when the
        buffer has closed (shutdown) and took nothing. ``cursor`` = (actor, next problem index) is recorded
        with the insert; ``tree`` is the id of the search tree the samples are (all of it)."""
        ...

    def cursors(self) -> dict[str, int]:
        """Each actor's next problem index, as recorded with its accepted inserts."""
        ...


class Reporter(Protocol):
    """Where an actor sends its running totals (now and then with a finished tree) and its events."""

    def report(self, actor: str, stats: dict[str, Any], tree: dict | None = None) -> None: ...

    def event(self, kind: str, **fields: Any) -> None: ...


@dataclass
class ActorBoard:
    """The actors' latest totals, their events and a few recent trees: what the driver logs and renders."""

    stats: dict[str, dict[str, Any]] = field(default_factory=dict)
    events: list[dict[str, Any]] = field(default_factory=list)
    trees: list[dict] = field(default_factory=list)

    def report(self, actor: str, stats: dict[str, Any], tree: dict | None = None) -> None:
        self.stats[actor] = stats
        if tree is not None:
            self.trees = (self.trees + [tree])[-RECENT_TREES:]

    def event(self, kind: str, **fields: Any) -> None:
        self.events.append({"kind": kind, "time": time.time(), **fields})

    def latest_tree(self) -> dict | None:
        return self.trees[-1] if self.trees else None
