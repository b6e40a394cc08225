"""The replay buffer's archive of solved problems, for self-imitation (``buffer.solution_replay``).

Oh et al. 2018, "Self-Imitation Learning": the newest imitated response (``IMITATION_SOURCES``, e.g. a solved
tree's best path, as its step samples) of each problem is kept after its tree has left the buffer, and a
share of every learner batch is drawn from it, whole responses of problems picked uniformly with
replacement: a problem the search solved once keeps teaching, the way an SFT pool is revisited every epoch.
"""

from __future__ import annotations

import random
from dataclasses import replace
from typing import Any

from arbor.core.samples import IMITATION_SOURCES, REPLAYED_FLAG, StepSample


class SolutionArchive:
    """Problem uid -> the step samples of its newest imitated response, at most ``capacity`` problems (the
    one archived longest ago goes first)."""

    def __init__(self, capacity: int):
        if capacity < 1:
            raise ValueError(f"solution_capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self._by_problem: dict[str, list[StepSample]] = {}  # the longest-archived first

    def __len__(self) -> int:
        return len(self._by_problem)

    def problems(self) -> list[str]:
        return list(self._by_problem)

    def add(self, samples: list[StepSample]) -> int:
        """Archive the imitated responses among ``samples`` (one tree's insert); returns how many."""
        fresh: dict[str, list[StepSample]] = {}
        for sample in samples:
            if sample.source in IMITATION_SOURCES and sample.problem_uid:
                fresh.setdefault(sample.problem_uid, []).append(sample)
        for uid, steps in fresh.items():
            self._by_problem.pop(uid, None)
            self._by_problem[uid] = steps
        while len(self._by_problem) > self.capacity:
            del self._by_problem[next(iter(self._by_problem))]
        return len(fresh)

    def draw(self, rng: random.Random, n: int) -> list[StepSample]:
        """``n`` step samples: whole responses of uniformly drawn problems, the last one cut to ``n``, each
        flagged ``REPLAYED_FLAG`` (outside the lag rule)."""
        archive = list(self._by_problem.values())
        drawn: list[StepSample] = []
        while len(drawn) < n:
            drawn += rng.choice(archive)
        return [replace(s, meta={**s.meta, REPLAYED_FLAG: True}) for s in drawn[:n]]

    def to_json(self) -> list[list[dict[str, Any]]]:
        return [[s.to_json() for s in steps] for steps in self._by_problem.values()]

    def load_json(self, raw: list[list[dict[str, Any]]]) -> None:
        for response in raw:
            steps = [StepSample.from_json(r) for r in response]
            self._by_problem[steps[0].problem_uid] = steps
