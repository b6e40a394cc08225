"""The replay buffer between rollout actors and the learner, as a plain in-process object.

The Ray actor that wraps it (``arbor.launch.distributed.replay_service``) turns ``False`` / ``None`` from
``try_insert`` / ``try_sample`` into an await; ``train.mode=local`` calls it directly. Semantics:

- Every item carries its policy version; ``try_sample(n, current_version)`` first evicts, and counts,
  items older than ``current_version - max_policy_lag``, so a stale item is never returned.
- Rate limiting follows Reverb's SampleToInsertRatio (Cassirer et al. 2021, "Reverb: A Framework for
  Experience Replay"): inserts block when the learner falls behind, samples block when data is short.
- Capacity: a full buffer evicts its oldest already-sampled items; if that frees too little the insert
  blocks rather than drop unseen data, except below one sample per insert (most items age out untrained
  anyway; with ``train.sync_every`` above 1 they fill the buffer before the lag rule takes them) and when the
  learner waits on the ratio (neither side could move): then the oldest go, unseen too (``evicted_unseen``).
- Samplers: ``fifo`` (oldest first) and ``newest`` hand out each item once; ``prioritized`` draws with replacement.
- Only whole search trees enter (:func:`check_whole_trees`): a tree cut short never reaches the learner.
- Each accepted insert may carry its actor's cursor (the next problem of its shard), so the items a
  snapshot holds and the cursors it records always agree, and a resumed actor continues right after the
  last tree the buffer took.
- Self-imitation (``buffer.solution_replay``, :mod:`actors.solutions`): that share of every sample is drawn
  from an archive of each problem's newest imitated response, outside the rate limiter and the lag rule.
- ``snapshot`` / ``restore`` write JSON (no pickle) including the RNG state and the cursors, so a restored
  buffer returns the same items for the same calls.

Accounting invariant (tested): ``inserted == size + released + evicted_stale + evicted_capacity``,
where ``released`` counts items ``fifo`` or ``newest`` handed to the learner (each exactly once).
"""

from __future__ import annotations

import json
import math
import os
import random
from collections import Counter
from dataclasses import dataclass, replace
from itertools import islice
from pathlib import Path
from typing import Any, Literal

from arbor.actors.ledger import TreeLedger, check_whole_trees
from arbor.actors.rate_limiter import RateLimiter
from arbor.actors.solutions import SolutionArchive
from arbor.core.errors import DataError
from arbor.core.runs import random_state_from_json, random_state_to_json
from arbor.core.samples import ARCHIVE_ONLY_SOURCES, DEMO_FLAG, StepSample

SNAPSHOT_FORMAT = "arbor.replay/1"
SAMPLERS = ("fifo", "newest", "prioritized")
RELEASING = ("fifo", "newest")  # samplers that hand each item out once and remove it
LATER_COUNTERS = ("solutions_archived", "solutions_replayed", "evicted_unseen")  # older snapshots: 0


@dataclass
class _Item:
    key: int
    sample: StepSample
    priority: float
    times_sampled: int = 0

    @property
    def is_demo(self) -> bool:
        return bool(self.sample.meta.get(DEMO_FLAG, False))


class ReplayBuffer:
    """Bounded, versioned, rate-limited replay of ``StepSample``s; see the module docstring."""

    def __init__(
        self,
        capacity: int,
        sampler: Literal["fifo", "newest", "prioritized"] = "fifo",
        max_policy_lag: int = 1,
        rate_limiter: RateLimiter | None = None,
        seed: int = 0,
        priority_eps: float = 1e-3,
        solution_replay: float = 0.0,
        solution_capacity: int = 4096,
    ):
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        if sampler not in SAMPLERS:
            raise ValueError(f"sampler must be one of {', '.join(SAMPLERS)}, got {sampler!r}")
        if max_policy_lag < 0:
            raise ValueError(f"max_policy_lag must be >= 0, got {max_policy_lag}")
        if not 0.0 <= solution_replay < 1.0:
            raise ValueError(f"solution_replay must be in [0, 1), got {solution_replay}")
        self.capacity = capacity
        self.sampler = sampler
        self.max_policy_lag = max_policy_lag
        self.rate_limiter = rate_limiter or RateLimiter()
        self.seed = seed
        self.priority_eps = priority_eps
        self.solution_replay = solution_replay
        self._solutions = SolutionArchive(solution_capacity)
        self._rng = random.Random(seed)
        self._items: dict[int, _Item] = {}  # insertion order == age, oldest first
        # version -> its non-demonstration items: staleness is checked on the oldest here, a scan only if stale
        self._versions: Counter[int] = Counter()
        self._sampled_present = 0  # items still held that were sampled (prioritized): what capacity may evict
        self._next_key = 0
        self._counters = dict.fromkeys(
            (
                "inserted",
                "sampled",
                "released",
                "evicted_stale",
                "evicted_capacity",
                "evicted_unseen",
                "blocked_inserts",
                "blocked_samples",
                "demonstrations",
                "solutions_archived",
                "solutions_replayed",
            ),
            0,
        )
        self._last_lags: dict[int, int] = {}
        self._cursors: dict[str, int] = {}  # actor -> next problem index, recorded with its accepted inserts
        self.ledger = TreeLedger()  # every tree's fate: begun, inserted once, or discarded in flight
        self.max_size = 0  # the most items held at once (never above capacity)

    def __len__(self) -> int:
        return len(self._items)

    # ---- insert -------------------------------------------------------------------------------

    def check_trees(self, samples: list[StepSample]) -> None:
        """:func:`check_whole_trees`, counting a refused partial tree in the ledger."""
        try:
            check_whole_trees(samples)
        except ValueError:
            self.ledger.counts["partial_trees"] += 1
            raise

    def begin_trees(self, trees: list[str]) -> None:
        """An actor is about to search these trees (ids ``ACTOR/CURSOR``): see :class:`TreeLedger`."""
        self.ledger.begin(trees)

    def try_insert(
        self, samples: list[StepSample], cursor: tuple[str, int] | None = None, tree: str | None = None
    ) -> bool:
        """Insert all of ``samples`` or none; ``False`` means "would block, retry later", nothing changed.

        ``cursor`` = (actor, next problem index) is recorded when the insert is taken. ``tree`` names the
        search tree the samples are (all of them, maybe none): a tree already inserted is refused, counted as
        a duplicate, and reported as taken. A partial tree raises ``ValueError`` (see :func:`check_whole_trees`).
        Samples of ``ARCHIVE_ONLY_SOURCES`` go with the insert to the solution archive alone.
        """
        archive_only = [s for s in samples if s.source in ARCHIVE_ONLY_SOURCES]
        samples = [s for s in samples if s.source not in ARCHIVE_ONLY_SOURCES]
        self.check_trees(samples)
        if len(samples) > self.capacity:
            raise ValueError(f"cannot insert {len(samples)} samples into a buffer of capacity {self.capacity}")
        if tree is not None and self.ledger.seen(tree):
            self.ledger.counts["duplicate_trees"] += 1
            self._take_cursor(cursor)
            return True
        if not samples:
            if tree is not None:
                self.ledger.record(tree, 0)
            self._take_cursor(cursor)
            if self.solution_replay:
                self._counters["solutions_archived"] += self._solutions.add(archive_only)
            return True
        n = len(samples)
        free = self.capacity - len(self._items)
        short = free + self._sampled_present < n  # decided from counts: a full buffer's retries do not scan it
        sheds = self.rate_limiter.samples_per_insert < 1 or self.learner_waits_on_ratio()
        if not self.rate_limiter.can_insert(n) or (short and not sheds):
            self._counters["blocked_inserts"] += 1
            return False
        victims = list(islice((k for k, it in self._items.items() if it.times_sampled), max(0, n - free)))
        if short:  # the sampled ones do not make room enough: then the oldest unseen
            victims += islice((k for k, it in self._items.items() if not it.times_sampled), n - free - len(victims))
        for key in victims:
            self._counters["evicted_unseen"] += self._remove(key).times_sampled == 0
            self._counters["evicted_capacity"] += 1
            self.rate_limiter.deletes += 1
        for sample in samples:
            self._items[self._next_key] = _Item(self._next_key, sample, self.default_priority(sample))
            self._next_key += 1
        self._versions.update(s.policy_version for s in samples if not s.meta.get(DEMO_FLAG, False))
        self.rate_limiter.inserts += n
        self._counters["inserted"] += n
        self.max_size = max(self.max_size, len(self._items))
        if tree is not None:
            self.ledger.record(tree, n)
        self._take_cursor(cursor)
        if self.solution_replay:
            self._counters["solutions_archived"] += self._solutions.add(samples + archive_only)
        return True

    def learner_waits_on_ratio(self) -> bool:
        """The learner's last sample was refused by the rate limiter (not for want of items) and still would be."""
        return self._holds(self.rate_limiter.starving) and self.rate_limiter.learner_waits()

    def _holds(self, n: int) -> bool:
        """Enough items for a sample of ``n``: a releasing sampler needs n, prioritized (with replacement) one."""
        return len(self._items) >= (n if self.sampler in RELEASING else 1)

    def _take_cursor(self, cursor: tuple[str, int] | None) -> None:
        if cursor is not None:
            actor, index = cursor
            self._cursors[actor] = max(index, self._cursors.get(actor, 0))

    def cursors(self) -> dict[str, int]:
        """Each actor's next problem index, as recorded with the inserts this buffer took."""
        return dict(self._cursors)

    def insert_demonstrations(self, samples: list[StepSample]) -> bool:
        """Insert off-policy traces (e.g. distilled reasoning from JSONL), flagged ``meta["demonstration"]``.

        Same blocking rules as ``try_insert``. Demonstrations come from outside the policy lineage, so
        their ``policy_version`` is not compared with the current one: they are exempt from lag
        eviction and leave only by sampling (``fifo``, ``newest``) or capacity eviction.
        """
        flagged = [replace(s, meta={**s.meta, DEMO_FLAG: True}) for s in samples]
        if ok := self.try_insert(flagged):
            self._counters["demonstrations"] += len(flagged)
        return ok

    def default_priority(self, sample: StepSample) -> float:
        return abs(sample.advantage) + self.priority_eps

    def _add(self, item: _Item) -> None:
        self._items[item.key] = item
        self._sampled_present += item.times_sampled > 0
        if not item.is_demo:
            self._versions[item.sample.policy_version] += 1

    def _remove(self, key: int) -> _Item:
        item = self._items.pop(key)
        self._sampled_present -= item.times_sampled > 0
        if not item.is_demo:
            version = item.sample.policy_version
            self._versions[version] -= 1
            if not self._versions[version]:
                del self._versions[version]
        return item

    # ---- sample -------------------------------------------------------------------------------

    def evict_stale(self, current_version: int) -> int:
        """Evict and count non-demonstration items older than ``current_version - max_policy_lag``."""
        oldest_ok = current_version - self.max_policy_lag
        if not self._versions or min(self._versions) >= oldest_ok:
            return 0  # nothing stale: no scan (the version count is small, the buffer is not)
        stale = [k for k, it in self._items.items() if not it.is_demo and it.sample.policy_version < oldest_ok]
        for key in stale:
            self._remove(key)
        self._counters["evicted_stale"] += len(stale)
        self.rate_limiter.deletes += len(stale)
        return len(stale)

    def try_sample_keyed(self, n: int, current_version: int) -> list[tuple[int, StepSample]] | None:
        """Like ``try_sample`` but returns ``(key, sample)`` pairs, the keys for ``update_priorities``."""
        releasing = self.sampler in RELEASING
        if n < 1 or (releasing and n > self.capacity):
            raise ValueError(f"cannot sample {n} items from a {self.sampler} buffer of capacity {self.capacity}")
        replayed = min(n - 1, round(n * self.solution_replay)) if self._solutions else 0
        n -= replayed
        self.evict_stale(current_version)
        if not self._holds(n) or not self.rate_limiter.can_sample(n):
            self._counters["blocked_samples"] += 1
            self.rate_limiter.starving = n
            return None
        self.rate_limiter.starving = 0
        if releasing:  # the n oldest or newest, not a full copy
            ends = islice(self._items if self.sampler == "fifo" else reversed(self._items), n)
            chosen = [self._remove(k) for k in list(ends)]
            self.rate_limiter.deletes += n
            self._counters["released"] += n
        else:
            items = list(self._items.values())
            chosen = self._rng.choices(items, weights=[it.priority for it in items], k=n)
        for it in chosen:  # (a releasing sampler's chosen items have already left the buffer)
            self._sampled_present += not releasing and it.times_sampled == 0
            it.times_sampled += 1
        self.rate_limiter.samples += n
        self._counters["sampled"] += n
        self._last_lags = dict(Counter(current_version - it.sample.policy_version for it in chosen if not it.is_demo))
        out = [(it.key, it.sample) for it in chosen]
        if replayed:  # key -1: archive draws have no priority to update
            out += [(-1, s) for s in self._solutions.draw(self._rng, replayed)]
            self._counters["solutions_replayed"] += replayed
        return out

    def try_sample(self, n: int, current_version: int) -> list[StepSample] | None:
        """Sample ``n`` items trained on by policy ``current_version``; ``None`` means "would block".

        FIFO hands out the oldest items, ``newest`` the newest, each exactly once; prioritized draws with
        replacement with probability proportional to priority (default ``|advantage| + eps``). Never returns an item
        more than ``max_policy_lag`` versions behind ``current_version``.
        """
        keyed = self.try_sample_keyed(n, current_version)
        return None if keyed is None else [s for _, s in keyed]

    def update_priorities(self, priorities: dict[int, float]) -> None:
        """Set new priorities by key; keys of items already gone (released, evicted) are ignored."""
        for key, priority in priorities.items():
            # Strictly positive so the proportional draw always has mass (add eps to |td| upstream).
            if not (math.isfinite(priority) and priority > 0):
                raise ValueError(f"priority for key {key} must be finite and > 0, got {priority}")
            if key in self._items:
                self._items[key].priority = float(priority)

    def stats(self) -> dict[str, Any]:
        """Counters for dashboards; ``lag_histogram`` maps lag -> count over the last sample (no demos)."""
        return {
            "size": len(self._items),
            "max_size": self.max_size,
            "solutions": len(self._solutions),
            "capacity": self.capacity,
            **self._counters,
            **self.ledger.stats(),
            "lag_histogram": dict(self._last_lags),
        }

    # ---- snapshot -----------------------------------------------------------------------------

    def snapshot(self, path: str | os.PathLike[str]) -> None:
        """Write the whole state as JSON, atomically (a crash leaves the old snapshot intact)."""
        path = Path(path)
        state = {
            "format": SNAPSHOT_FORMAT,
            "config": {
                "capacity": self.capacity,
                "sampler": self.sampler,
                "max_policy_lag": self.max_policy_lag,
                "seed": self.seed,
                "priority_eps": self.priority_eps,
                "solution_replay": self.solution_replay,
                "solution_capacity": self._solutions.capacity,
            },
            "rate_limiter": self.rate_limiter.to_json(),
            "counters": self._counters,
            "last_lags": [[lag, c] for lag, c in self._last_lags.items()],
            "next_key": self._next_key,
            "extra": {
                "cursors": self._cursors,
                "trees": self.ledger.to_json(),
                "max_size": self.max_size,
                "solutions": self._solutions.to_json(),
            },
            "rng_state": random_state_to_json(self._rng.getstate()),
            "items": [
                {
                    "key": it.key,
                    "priority": it.priority,
                    "times_sampled": it.times_sampled,
                    "sample": it.sample.to_json(),
                }
                for it in self._items.values()
            ],
        }
        tmp = path.with_name(f".{path.name}.tmp.{os.getpid()}")
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)

    @classmethod
    def restore(cls, path: str | os.PathLike[str], vocab_size: int | None = None) -> ReplayBuffer:
        """Rebuild a buffer from ``snapshot``; a missing, truncated or malformed file raises ``DataError``, as
        does a token id outside ``[0, vocab_size)`` (when given), which would fail mid-run in an embedding."""
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as e:
            raise DataError(f"{path}: cannot read replay snapshot ({e.strerror})") from e
        try:
            state = json.loads(text)
        except json.JSONDecodeError as e:
            raise DataError(
                f"{path}: replay snapshot is not valid JSON (truncated or corrupt?): {e.msg} at line {e.lineno} "
                f"column {e.colno}"
            ) from e
        if not isinstance(state, dict) or state.get("format") != SNAPSHOT_FORMAT:
            found = state.get("format") if isinstance(state, dict) else type(state).__name__
            raise DataError(f"{path}: not a replay snapshot: expected format {SNAPSHOT_FORMAT!r}, found {found!r}")
        field = "config"
        try:
            buf = cls(**state["config"])
            field = "rate_limiter"
            buf.rate_limiter = RateLimiter.from_json(state["rate_limiter"])
            field = "counters"
            missing = set(buf._counters) - set(state["counters"]) - set(LATER_COUNTERS)
            if missing:
                raise KeyError(sorted(missing)[0])
            buf._counters = {k: int(state["counters"].get(k, 0)) for k in buf._counters}
            field = "last_lags"
            buf._last_lags = {int(lag): int(c) for lag, c in state["last_lags"]}
            field = "next_key"
            buf._next_key = int(state["next_key"])
            field = "extra"
            extra = dict(state.get("extra", {}))
            buf._cursors = {str(k): int(v) for k, v in extra.get("cursors", {}).items()}
            buf.ledger = TreeLedger.from_json(extra.get("trees", {}))
            buf.max_size = int(extra.get("max_size", 0))
            field = "extra.solutions"
            buf._solutions.load_json(extra.get("solutions", []))
            field = "rng_state"
            buf._rng.setstate(random_state_from_json(state["rng_state"]))
            for i, raw in enumerate(state["items"]):
                field = f"items[{i}]"
                sample = StepSample.from_json(raw["sample"])
                if vocab_size is not None:
                    bad = [t for t in (*sample.state_tokens, *sample.action_tokens) if not 0 <= t < vocab_size]
                    if bad:
                        raise ValueError(f"token id {bad[0]} is outside the model's vocabulary (0..{vocab_size - 1})")
                buf._add(_Item(raw["key"], sample, raw["priority"], raw["times_sampled"]))
        except (KeyError, TypeError, ValueError) as e:
            raise DataError(f"{path}: replay snapshot field {field!r} is malformed: {type(e).__name__}: {e}") from e
        if len(buf._items) != buf.rate_limiter.size or len(buf._items) > buf.capacity:
            raise DataError(
                f"{path}: replay snapshot holds {len(buf._items)} items but its rate limiter counts "
                f"{buf.rate_limiter.size} (capacity {buf.capacity}): the file is inconsistent"
            )
        return buf
