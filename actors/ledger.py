"""The replay buffer's tree ledger: what became of every search tree an actor began, and the whole-tree rule."""

from __future__ import annotations

from collections import Counter
from typing import Any

from arbor.core.samples import StepSample


class TreeLedger:
    """Every search tree's fate, by id (``"rollout-0/17"``: the actor and its shard cursor).

    An actor *begins* a round's trees before it searches them; a finished tree is then inserted whole
    (possibly with no samples, when no response got a verdict) exactly once, or never: a tree cut short by a
    killed actor or by the end of the run is *discarded in flight*. So at any time
    ``begun == inserted + discarded``; a second insert of a tree id is refused and counted as a duplicate, an
    insert that holds part of a tree is refused and counted as partial. The ledger is saved with the
    buffer's snapshot, so a resumed run accounts for the trees of its whole lineage.
    """

    def __init__(self) -> None:
        self.begun: dict[str, set[int]] = {}  # actor -> cursors of the trees it began
        self.inserted: dict[str, set[int]] = {}  # actor -> cursors of the trees the buffer took
        self.counts = {"duplicate_trees": 0, "partial_trees": 0, "empty_trees": 0, "unannounced_trees": 0}

    @staticmethod
    def split(tree: str) -> tuple[str, int]:
        actor, _, cursor = tree.rpartition("/")
        if not actor or not cursor.isdigit():
            raise ValueError(f"tree id {tree!r} is not ACTOR/CURSOR")
        return actor, int(cursor)

    def begin(self, trees: list[str]) -> None:
        for tree in trees:
            actor, cursor = self.split(tree)
            self.begun.setdefault(actor, set()).add(cursor)

    def seen(self, tree: str) -> bool:
        actor, cursor = self.split(tree)
        return cursor in self.inserted.get(actor, ())

    def record(self, tree: str, num_samples: int) -> None:
        actor, cursor = self.split(tree)
        if cursor not in self.begun.get(actor, ()):
            self.counts["unannounced_trees"] += 1  # inserted without a begin: counted as begun now
            self.begun.setdefault(actor, set()).add(cursor)
        self.inserted.setdefault(actor, set()).add(cursor)
        self.counts["empty_trees"] += num_samples == 0

    def stats(self) -> dict[str, int]:
        begun = sum(len(v) for v in self.begun.values())
        inserted = sum(len(v) for v in self.inserted.values())
        return {"trees_begun": begun, "trees_inserted": inserted, "trees_discarded": begun - inserted, **self.counts}

    def to_json(self) -> dict[str, Any]:
        return {
            "begun": {a: _ranges(c) for a, c in self.begun.items()},
            "inserted": {a: _ranges(c) for a, c in self.inserted.items()},
            "counts": dict(self.counts),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TreeLedger:
        ledger = cls()
        for name in ("begun", "inserted"):
            getattr(ledger, name).update({str(a): _unranges(r) for a, r in dict(data.get(name, {})).items()})
        ledger.counts.update({k: int(v) for k, v in dict(data.get("counts", {})).items() if k in ledger.counts})
        return ledger


def _ranges(values: set[int]) -> list[list[int]]:
    """Sorted integers as [first, last] runs (a shard's cursors are mostly consecutive)."""
    out: list[list[int]] = []
    for v in sorted(values):
        if out and v == out[-1][1] + 1:
            out[-1][1] = v
        else:
            out.append([v, v])
    return out


def _unranges(runs: list[list[int]]) -> set[int]:
    return {v for first, last in runs for v in range(int(first), int(last) + 1)}


def check_whole_trees(samples: list[StepSample]) -> None:
    """Samples tagged with a tree (``meta["tree"]``, ``meta["tree_size"]``) must come as whole trees.

    Rollout actors insert each finished tree in one call; a partial tree here would mean an actor sent a
    search cut short, so it is refused loudly rather than trained on.
    """
    counts = Counter(s.meta["tree"] for s in samples if "tree" in s.meta)
    for s in samples:
        tree = s.meta.get("tree")
        if tree is not None and counts[tree] != s.meta.get("tree_size"):
            raise ValueError(
                f"insert holds {counts[tree]} samples of tree {tree!r} but the tree has {s.meta.get('tree_size')}: "
                "only whole trees may enter the buffer"
            )
