"""A radix-style prefix cache of attention keys/values, one entry per segment, tagged with a policy version.

The trie mirrors the search trees: an entry holds the KV of one segment's tokens only (the prompt, or
one step), so a node's prefix is stored once and shared by all of its children, and different trees
over the same prompt share their root. An entry also keeps what the next expansion needs without a
forward pass: the logits after its last token and the value head's estimate there.

Every entry carries the policy version it was computed with; changing the version drops the whole cache
(NeMo-RL once served 17-version-old KV from a prefix cache that was not reset on weight updates).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

Segments = tuple[tuple[int, ...], ...]


@dataclass
class CacheEntry:
    keys: list[torch.Tensor]  # per layer [H_kv, T_seg, D]: this segment's tokens only
    values: list[torch.Tensor]  # per layer [H_kv, T_seg, D]
    next_logits: torch.Tensor  # [V]: logits after the segment's last token
    value: float | None  # value head at the segment's last token
    version: int  # policy version that computed it
    children: dict[tuple[int, ...], CacheEntry] = field(default_factory=dict)

    @property
    def num_tokens(self) -> int:
        return int(self.keys[0].shape[1]) if self.keys else 0


class PrefixCache:
    """Trie of :class:`CacheEntry` keyed by segments; all entries share the cache's current version."""

    def __init__(self, version: int = 0):
        self.version = version
        self.roots: dict[tuple[int, ...], CacheEntry] = {}
        self.dropped_entries = 0  # entries discarded by version changes and releases

    def lookup(self, segments: Segments) -> list[CacheEntry]:
        """Entries for the longest cached leading run of ``segments`` (possibly none)."""
        out: list[CacheEntry] = []
        level = self.roots
        for seg in segments:
            entry = level.get(seg)
            if entry is None:
                break
            if entry.version != self.version:  # cannot happen through this API; refuse rather than serve stale KV
                raise RuntimeError(f"stale KV of policy version {entry.version} in a version {self.version} cache")
            out.append(entry)
            level = entry.children
        return out

    def insert(self, segments: Segments, entry: CacheEntry) -> CacheEntry:
        """Store ``entry`` for the last segment; its parent prefix must be cached. Keeps an existing entry."""
        if entry.version != self.version:
            raise ValueError(f"entry of policy version {entry.version} offered to a version {self.version} cache")
        parents = self.lookup(segments[:-1])
        if len(parents) != len(segments) - 1:
            raise KeyError("the parent prefix of a cache entry must be cached first")
        level = parents[-1].children if parents else self.roots
        return level.setdefault(segments[-1], entry)

    def set_version(self, version: int) -> None:
        """Adopt new weights' version; every entry computed with other weights is dropped."""
        if version != self.version:
            self.clear()
            self.version = version

    def clear(self) -> None:
        """Drop every entry (the version stays)."""
        self.dropped_entries += self.num_entries
        self.roots.clear()

    def release(self, prompt: tuple[int, ...]) -> None:
        """Drop the subtree under ``prompt`` (its search is over)."""
        entry = self.roots.pop(prompt, None)
        if entry is not None:
            self.dropped_entries += sum(1 for _ in _walk(entry))

    @property
    def num_entries(self) -> int:
        return sum(1 for root in self.roots.values() for _ in _walk(root))

    @property
    def num_tokens(self) -> int:
        return sum(e.num_tokens for root in self.roots.values() for e in _walk(root))


def _walk(entry: CacheEntry):
    stack = [entry]
    while stack:
        e = stack.pop()
        yield e
        stack.extend(e.children.values())


def prefix_kv(entries: list[CacheEntry]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Keys and values of a whole prefix, per layer [H_kv, L, D], by concatenating its segments."""
    layers = len(entries[0].keys)
    keys = [torch.cat([e.keys[i] for e in entries], dim=1) for i in range(layers)]
    values = [torch.cat([e.values[i] for e in entries], dim=1) for i in range(layers)]
    return keys, values
