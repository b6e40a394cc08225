"""The training loop's runtime in one process, with no Ray (``train.mode=local``): for debugging and for
quick recipe trials.

The same objects the Ray actors wrap, called directly and one after the other: ``resources.rollout_actors``
rollout workers searching their shards of the same problem stream, one replay buffer, one learner rank
(``resources.learner_ranks`` must be 1). Training is round-based as in ``train.mode=sync``: each round
searches ``train.sync_trees_per_round`` trees, then trains on every whole batch the buffer holds, then
publishes; the workers load the new weights before their next round. Threads: ``threads`` (torch's default
when 0) for everything.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from arbor.actors.replay import ReplayBuffer
from arbor.actors.rollout import RolloutSeams, RolloutWorker
from arbor.core.channels import ActorBoard, BufferClient, InProcessWeights
from arbor.core.config import ArborConfig
from arbor.core.errors import ConfigError
from arbor.core.samples import StepSample
from arbor.launch.checkpoints import REPLAY_FILE
from arbor.launch.runtime import ActorsReport, Runtime, replay_buffer_kwargs
from arbor.learner.advantages import sample_builder
from arbor.learner.rank import LearnerRank, LearnerStep


class InProcessBuffer(BufferClient):
    """A rollout worker's buffer client over the replay buffer itself. Nothing runs concurrently here, so an
    insert the buffer refuses would wait forever: it stops the run with the keys to change instead."""

    def __init__(self, buffer: ReplayBuffer, cfg: ArborConfig):
        self.buffer, self.cfg = buffer, cfg

    def begin(self, trees: Sequence[str]) -> None:
        self.buffer.begin_trees(list(trees))

    def insert(
        self, samples: Sequence[StepSample], cursor: tuple[str, int] | None = None, tree: str | None = None
    ) -> bool:
        if not self.buffer.try_insert(list(samples), cursor, tree):
            raise ConfigError(
                f"train.mode=local: a round's trees do not fit the replay buffer ({len(self.buffer)} of "
                f"buffer.capacity={self.buffer.capacity} items held, {len(samples)} more offered); raise "
                f"buffer.capacity or lower train.sync_trees_per_round ({self.cfg.train.sync_trees_per_round})"
            )
        return True

    def cursors(self) -> dict[str, int]:
        return self.buffer.cursors()


class LocalRuntime(Runtime):
    """Rollout workers, replay buffer and one learner rank as objects in this process."""

    def __init__(self, cfg: ArborConfig):
        self.cfg = cfg  # one learner rank: the config's checks refuse a group in local mode
        self.workers: list[RolloutWorker] = []
        self.rank: LearnerRank | None = None

    def start(self, name: str, init_path: str, resume: Path | None, version: int, reference_path: str | None) -> None:
        cfg = self.cfg
        self.buffer = (
            ReplayBuffer.restore(resume / REPLAY_FILE) if resume else ReplayBuffer(**replay_buffer_kwargs(cfg))
        )
        self.weights = InProcessWeights()
        self.board = ActorBoard()
        self.rank = LearnerRank(cfg, 0, 1, init_path, self.weights, reference_path)
        self.rank.setup(start_version=version)
        if resume and self.rank.load(str(resume)) != version:
            raise RuntimeError(f"{resume}: the learner restored another version than the run state's {version}")
        self.rank.publish()
        n = cfg.resources.rollout_actors
        seams = RolloutSeams(self.weights, InProcessBuffer(self.buffer, cfg), self.board, sample_builder(cfg.train))
        self.workers = [RolloutWorker(cfg, i, n, init_path, seams) for i in range(n)]

    def insert_demonstrations(self, samples: list[StepSample]) -> None:
        if not self.buffer.insert_demonstrations(samples):
            raise ConfigError(
                f"train.demonstrations: {len(samples)} steps do not fit buffer.capacity={self.buffer.capacity}"
            )

    def stream(self) -> None:
        raise ConfigError("train.mode=local trains in rounds; free-running actors need train.mode=async")

    def search_round(self, trees: int) -> None:
        per_worker = max(1, math.ceil(trees / len(self.workers)))
        for worker in self.workers:
            worker.run(max_trees=per_worker)

    def sample(self, n: int, version: int, timeout_s: float) -> list[StepSample] | None:
        return self.buffer.try_sample(n, version)

    def learn(self, batch: list[StepSample] | None, publish: bool | None = None) -> LearnerStep | None:
        return self.rank.step(batch, publish)

    def check_rollouts(self) -> None:
        return None  # nothing runs on its own here, so nothing can have died

    def buffer_stats(self) -> dict[str, Any]:
        return self.buffer.stats()

    def actors(self) -> ActorsReport:
        return ActorsReport(dict(self.board.stats), list(self.board.events))

    def latest_tree(self) -> dict | None:
        return self.board.latest_tree()

    def save(self, path: Path, meta: dict[str, Any]) -> dict[str, int]:
        self.rank.save(str(path), meta)
        self.buffer.snapshot(path / REPLAY_FILE)
        return self.buffer.cursors()

    def with_policy(self, fn, *args: Any) -> Any:
        return self.rank.with_policy(fn, *args)

    def stop_rollouts(self) -> None:
        self.weights.stop = True

    @property
    def placement(self) -> dict[str, Any]:
        return {"learner": ["local"], "actors": ["local"] * len(self.workers)}

    def close(self) -> None:
        if self.rank is not None:
            self.rank.close()
        self.workers, self.rank = [], None
