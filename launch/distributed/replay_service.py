"""The replay buffer as an async Ray actor: ``insert`` and ``sample`` wait instead of refusing.

The buffer itself (``arbor.actors.replay.ReplayBuffer``) answers "would block" with ``False`` / ``None``;
this actor turns that into an await (the buffer's capacity rules decide what may be evicted), and refuses
inserts once the run closes it (an actor's tree cut off by shutdown is not taken, its cursor stays).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from arbor.actors.replay import ReplayBuffer
from arbor.core.samples import StepSample


class ReplayService:
    """The replay buffer as an async Ray actor: ``insert`` and ``sample`` wait instead of refusing.

    All methods run on the actor's one event loop, so the buffer needs no lock. A waiter sleeps on a
    condition that every successful insert or sample signals (each changes what the rate limiter allows).
    """

    def __init__(self, buffer: ReplayBuffer | None = None, restore_path: str | None = None, **kwargs: Any):
        if restore_path:
            self.buffer = ReplayBuffer.restore(restore_path)
        else:  # (an empty buffer is falsy: it has a length)
            self.buffer = buffer if buffer is not None else ReplayBuffer(**kwargs)
        self._changed = asyncio.Condition()
        self.waits = {"insert_seconds": 0.0, "sample_seconds": 0.0}
        self.closed = False  # set at shutdown: waiting and later inserts return False (the tree is not taken)
        self.refused_after_close = 0

    async def _wait(self, attempt, timeout_s: float | None, kind: str):
        t0 = time.perf_counter()
        got: list[Any] = [None]

        def ready() -> bool:
            evicted = self.buffer._counters["evicted_stale"]
            waited = self.buffer.learner_waits_on_ratio()
            got[0] = attempt()
            # a failed sample that evicted stale items frees room for inserts, and one that leaves the learner
            # waiting on the ratio lets a full buffer make room (ReplayBuffer.try_insert): wake the inserts
            if self.buffer._counters["evicted_stale"] != evicted or (
                not waited and self.buffer.learner_waits_on_ratio()
            ):
                self._changed.notify_all()
            return _ok(got[0])

        async with self._changed:
            if not ready():
                try:
                    await asyncio.wait_for(self._changed.wait_for(ready), timeout_s)
                except asyncio.TimeoutError:  # not the builtin TimeoutError before Python 3.11
                    got[0] = None
            if _ok(got[0]):
                self._changed.notify_all()
        result = got[0]
        self.waits[f"{kind}_seconds"] += time.perf_counter() - t0
        return result

    def begin(self, trees: list[str]) -> None:
        """An actor is about to search these trees (the ledger: ``arbor.actors.replay.TreeLedger``)."""
        self.buffer.begin_trees(trees)

    async def insert(
        self,
        samples: list[StepSample],
        demonstration: bool = False,
        cursor: tuple[str, int] | None = None,
        tree: str | None = None,
    ) -> bool:
        """Insert all of ``samples``, waiting while the rate limiter (or capacity) blocks.

        ``cursor`` = (actor, next problem index) is recorded with the insert, so a snapshot's items and the
        actors' cursors agree exactly. After ``close`` an insert returns False and takes nothing: the actor
        keeps its cursor and searches that problem again on resume. ``tree`` names the search tree the
        samples are (its ledger entry).
        """
        self.buffer.check_trees(samples)  # a partial tree fails the caller at once, not after a wait

        def attempt():
            if self.closed:
                return "closed"
            if demonstration:
                return self.buffer.insert_demonstrations(samples)
            return self.buffer.try_insert(samples, cursor, tree)

        result = await self._wait(attempt, None, "insert")
        if result == "closed":
            self.refused_after_close += 1
            return False
        return True

    async def close(self) -> int:
        """Refuse every waiting and future insert (shutdown); returns how many items the buffer holds."""
        self.closed = True
        async with self._changed:
            self._changed.notify_all()
        return len(self.buffer)

    async def sample(self, n: int, current_version: int, timeout_s: float = 1.0) -> list[StepSample] | None:
        """``n`` samples for policy ``current_version``, or ``None`` if none could be had within ``timeout_s``."""
        return await self._wait(lambda: self.buffer.try_sample(n, current_version), timeout_s, "sample")

    def stats(self) -> dict[str, Any]:
        return self.buffer.stats() | {"waits": dict(self.waits), "refused_after_close": self.refused_after_close}

    def snapshot(self, path: str) -> dict[str, int]:
        """Snapshot items, counters, RNG and the actors' cursors together; returns the cursors."""
        self.buffer.snapshot(path)
        return self.buffer.cursors()

    def cursors(self) -> dict[str, int]:
        """Each rollout actor's next problem index, as recorded with its accepted inserts."""
        return self.buffer.cursors()


def _ok(result: Any) -> bool:
    return result is not None and result is not False
