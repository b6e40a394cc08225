"""Reverb's SampleToInsertRatio rate limiter, as the replay buffer applies it."""

from __future__ import annotations

from typing import Any


class RateLimiter:
    """Reverb's SampleToInsertRatio: keep ``inserts * samples_per_insert - samples`` inside a window.

    The window is ``samples_per_insert * min_size_to_sample +/- error_buffer``. Until the buffer holds
    ``min_size_to_sample`` items inserts are free and samples are refused. ``deletes`` counts items that
    left the buffer (released, evicted), so ``size = inserts - deletes``; a buffer emptied by stale
    evictions therefore accepts inserts again instead of deadlocking. A batch of ``n`` inserts (``k``
    samples) can always eventually pass only if ``n * samples_per_insert`` (``k``) fits in the window
    width ``2 * error_buffer``: size batches accordingly. A search tree is inserted whole and its size is the
    search's, not the config's: an insert wider than the window is let in once the learner waits for data
    (``starving``, the size of the last sample refused), so one large tree cannot stall the run; the ratio
    then recovers as the learner samples it down.
    """

    def __init__(self, min_size_to_sample: int = 1, samples_per_insert: float = 1.0, error_buffer: float = 1.0):
        if min_size_to_sample < 1:
            raise ValueError(f"min_size_to_sample must be >= 1, got {min_size_to_sample}")
        if samples_per_insert <= 0:
            raise ValueError(f"samples_per_insert must be > 0, got {samples_per_insert}")
        # Smaller windows deadlock even single inserts or samples (Reverb applies the same bound).
        if error_buffer < max(1.0, samples_per_insert) / 2:
            raise ValueError(
                f"error_buffer must be >= max(1, samples_per_insert) / 2 = {max(1.0, samples_per_insert) / 2}, "
                f"got {error_buffer}"
            )
        self.min_size_to_sample = min_size_to_sample
        self.samples_per_insert = float(samples_per_insert)
        self.error_buffer = float(error_buffer)
        offset = self.samples_per_insert * min_size_to_sample
        self.min_diff = offset - self.error_buffer
        self.max_diff = offset + self.error_buffer
        self.inserts = 0
        self.samples = 0
        self.deletes = 0
        self.starving = 0  # size of the last sample refused (0 after one succeeds): the learner waits for data

    @property
    def size(self) -> int:
        return self.inserts - self.deletes

    def can_insert(self, n: int = 1) -> bool:
        """Whether ``n`` inserts may proceed now (no state change)."""
        if self.size + n <= self.min_size_to_sample:
            return True
        if (self.inserts + n) * self.samples_per_insert - self.samples <= self.max_diff:
            return True
        wider = n * self.samples_per_insert > self.max_diff - self.min_diff  # could never fit the window
        return wider and self.learner_waits()

    def learner_waits(self) -> bool:
        """The learner's last sample was refused (``starving``) and would still be: it waits for inserts."""
        return self.starving > 0 and not self.can_sample(self.starving)

    def can_sample(self, n: int = 1) -> bool:
        """Whether ``n`` samples may proceed now (no state change)."""
        if self.size < self.min_size_to_sample:
            return False
        return self.inserts * self.samples_per_insert - self.samples - n >= self.min_diff

    def to_json(self) -> dict[str, Any]:
        return {
            "min_size_to_sample": self.min_size_to_sample,
            "samples_per_insert": self.samples_per_insert,
            "error_buffer": self.error_buffer,
            "inserts": self.inserts,
            "samples": self.samples,
            "deletes": self.deletes,
            "starving": self.starving,  # the learner's waiting decides a full buffer's inserts: a restore keeps it
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RateLimiter:
        limiter = cls(data["min_size_to_sample"], data["samples_per_insert"], data["error_buffer"])
        limiter.inserts, limiter.samples, limiter.deletes = data["inserts"], data["samples"], data["deletes"]
        limiter.starving = int(data.get("starving", 0))  # (snapshots before 2026-12-03 lack it)
        return limiter
