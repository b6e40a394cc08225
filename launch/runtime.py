"""What the training loop asks of the processes it runs on: the :class:`Runtime` interface.

The loop (``arbor.launch.trainer``) is written once, against this interface; two implementations run it:

- ``arbor.launch.distributed.runtime.RayRuntime`` (``train.mode=async`` and ``sync``): rollout actors, the
  replay service, the coordinator and the learner group as Ray actors in one placement group;
- ``arbor.launch.local.LocalRuntime`` (``train.mode=local``): the same rollout workers, replay buffer and
  learner rank as plain objects in this process, called one after the other, with no Ray at all.

Round-based training (``sync``, ``local``) calls :meth:`Runtime.search_round` and then trains on what the
round inserted; ``async`` calls :meth:`Runtime.stream` once and lets the actors free-run under the buffer's
rate limiter.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from arbor.actors.replay import RateLimiter
from arbor.core.config import ArborConfig
from arbor.core.samples import StepSample
from arbor.learner.rank import LearnerStep


@dataclass(frozen=True)
class ActorsReport:
    """The rollout side as the driver logs it: each actor's running totals, and events (restarts)."""

    stats: dict[str, dict[str, Any]] = field(default_factory=dict)
    events: list[dict[str, Any]] = field(default_factory=list)


class Runtime(Protocol):
    """The rollout actors, the replay buffer and the learner ranks of one run, wherever they live."""

    def start(self, name: str, init_path: str, resume: Path | None, version: int, reference_path: str | None) -> None:
        """Build the buffer (restored from the checkpoint ``resume``, if any), the learner ranks on the weights at
        ``init_path`` (their optimizer state from ``resume``), publish ``version`` and start the rollout
        workers on those weights. ``name`` (the run's) names what a cluster shows of the run."""
        ...

    def insert_demonstrations(self, samples: list[StepSample]) -> None:
        """Off-policy traces into the buffer, before any rollout."""
        ...

    def stream(self) -> None:
        """Async mode: let every rollout actor search and insert until :meth:`stop_rollouts`."""
        ...

    def search_round(self, trees: int) -> None:
        """Round-based modes: search about ``trees`` problems over all actors and insert them; returns when done."""
        ...

    def sample(self, n: int, version: int, timeout_s: float) -> Any:
        """A batch of ``n`` samples for policy ``version`` (an opaque handle :meth:`learn` takes; it may hold
        None when the buffer had none within ``timeout_s``)."""
        ...

    def learn(self, batch: Any, publish: bool | None = None) -> LearnerStep | None:
        """One learner step on every rank with ``batch``; None when the batch came back empty."""
        ...

    def check_rollouts(self) -> None:
        """Raise when every rollout actor has stopped for good."""
        ...

    def buffer_stats(self) -> dict[str, Any]: ...

    def actors(self) -> ActorsReport: ...

    def latest_tree(self) -> dict | None:
        """A recently finished tree (JSON), for the dashboards."""
        ...

    def save(self, path: Path, meta: dict[str, Any]) -> dict[str, int]:
        """The learner's part of a checkpoint at ``path`` (model, value head, optimizer and RNG per rank) and
        the buffer's snapshot; returns the rollout cursors the snapshot holds."""
        ...

    def with_policy(self, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(model, tokenizer, *args)`` on the learner's current policy (rank 0), in eval mode."""
        ...

    def stop_rollouts(self) -> None:
        """Ask the actors to stop; their unfinished trees are dropped, never inserted."""
        ...

    def close(self) -> None:
        """Release every process and resource; safe to call once more after a failure."""
        ...

    @property
    def placement(self) -> dict[str, Any]:
        """Which node each learner rank and rollout actor runs on."""
        ...


def replay_buffer_kwargs(cfg: ArborConfig) -> dict[str, Any]:
    """The replay buffer of the ``buffer`` section, as both runtimes build it. Round-based modes
    train on a whole round at once, so their inserts must not wait on samples within a round: the rate
    limiter's window is then as wide as the buffer."""
    b = cfg.buffer
    error_buffer = b.error_buffer if cfg.train.mode == "async" else float(b.capacity)
    return dict(
        capacity=b.capacity,
        sampler=str(b.sampler),
        max_policy_lag=b.max_policy_lag,
        rate_limiter=RateLimiter(b.min_size_to_sample, b.samples_per_insert, error_buffer),
        seed=cfg.train.seed,
        solution_replay=b.solution_replay,
        solution_capacity=b.solution_capacity,
    )
