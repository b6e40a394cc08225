"""Sampling steps without replacement: a node's new children are drawn from the policy conditioned on not
being a step the node already has (``search.distinct_children``).

A tree that merges duplicate samples pays for every duplicate's tokens and keeps one child; a peaked policy
at temperature 1 spends most of an expansion that way (on the default countdown init, 64 sampled steps made
16 distinct nodes). Here the known steps sit in a token trie holding, at each prefix ``u``, the probability
``M(u)`` that a continuation of ``u`` is one of them (from their recorded per-token log-probs). Sampling token
``t`` after ``u`` from ``p(t | u) (1 - M(u t))`` is exactly the autoregressive factorisation of
``p(step | step not known)``, so a draw never repeats a known step and costs only its own tokens (Shi et al.
2020, "Incremental sampling without replacement for sequence models"). The backend draws a distinct
request's samples one at a time, adding each to the trie before the next.

The log-probs a step reports stay the model's own, unconditioned: the tree's priors and the learner's
behaviour probabilities are the policy's, and conditioning only decides which step is drawn next. Known
steps sampled under older weights make the masses approximate; a prefix whose reweighted mass vanishes
falls back to the plain distribution, and the tree merges the rare duplicate that results.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

# A node whose known children carry all but this much of the step distribution gets no more samples.
MIN_RESIDUAL = 1e-3


@dataclass
class TrieNode:
    mass: float = 0.0  # probability, given this prefix, that the step continues to a known step
    children: dict[int, TrieNode] = field(default_factory=dict)


class ExclusionTrie:
    """The known steps under one node, with the conditional mass of known continuations at every prefix."""

    def __init__(self, steps: Iterable[tuple[Sequence[int], Sequence[float]]] = ()):
        self.root = TrieNode()
        for token_ids, logprobs in steps:
            self.add(token_ids, logprobs)

    def add(self, token_ids: Sequence[int], logprobs: Sequence[float]) -> None:
        """Record a known step (its tokens and each token's log-prob under the sampling distribution)."""
        if len(token_ids) != len(logprobs):
            raise ValueError(f"a step has {len(token_ids)} tokens but {len(logprobs)} log-probs")
        if not token_ids:
            return
        suffix = [0.0] * (len(logprobs) + 1)  # suffix[d]: log-prob of tokens d.. of the step
        for d in range(len(logprobs) - 1, -1, -1):
            suffix[d] = suffix[d + 1] + float(logprobs[d])
        node = self.root
        node.mass += math.exp(suffix[0])
        for d, tok in enumerate(token_ids):
            node = node.children.setdefault(int(tok), TrieNode())
            node.mass += math.exp(suffix[d + 1])

    def residual(self) -> float:
        """The share of the step distribution not yet known: 1 - M(root), never below 0."""
        return max(0.0, 1.0 - self.root.mass)

    @staticmethod
    def bias(node: TrieNode) -> dict[int, float]:
        """Log-weights to add to the next token's log-probs at ``node``: log(1 - M(u t)) for each token t
        leading to a known step (-inf where every continuation is known); other tokens keep their weight."""
        return {
            tok: math.log(1.0 - child.mass) if child.mass < 1.0 - 1e-12 else -math.inf
            for tok, child in node.children.items()
        }
