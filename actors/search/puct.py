"""PUCT selection math, pure: floats in, floats out (Silver et al. 2017, "Mastering the game of Go
without human knowledge", and AlphaZero, Silver et al. 2018).

    score(a) = Q(s, a) + c_puct * P(s, a) * sqrt(N(s)) / (1 + N(s, a))

Here an action is a sampled reasoning step: P is the policy's probability of that step normalised over
its sampled siblings, Q the mean backed-up value, and an unvisited step starts from a first-play value
(its own value estimate when there is one). Virtual loss (pending visits of value 0) lowers Q and raises
N for paths whose leaf is still being expanded, so one tree can send several distinct leaves to a batch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence


def normalise_priors(seq_logprobs: Sequence[float]) -> list[float]:
    """Softmax over siblings of each step's log-probability (sum of its token log-probs)."""
    # [K] -> [K], stable: shift by the max so long, unlikely steps do not underflow all at once
    top = max(seq_logprobs)
    weights = [math.exp(lp - top) for lp in seq_logprobs]
    total = sum(weights)
    return [w / total for w in weights]


def mix_dirichlet(priors: Sequence[float], noise: Sequence[float], eps: float) -> list[float]:
    """Root exploration noise: (1 - eps) * P + eps * Dir(alpha) (AlphaZero, eps = 0.25)."""
    if len(priors) != len(noise):
        raise ValueError(f"need one noise value per prior; got {len(noise)} for {len(priors)}")
    return [(1.0 - eps) * p + eps * n for p, n in zip(priors, noise)]


def puct_scores(
    priors: Sequence[float],
    value_sums: Sequence[float],
    visits: Sequence[float],
    first_play: Sequence[float],
    parent_visits: float,
    c_puct: float,
) -> list[float]:
    """PUCT score of each child ([K] each -> [K]).

    ``visits`` may include virtual visits (value 0), which is how virtual loss enters; ``first_play``
    is the Q used for a child with no visits yet.
    """
    explore = c_puct * math.sqrt(max(parent_visits, 1.0))
    out = []
    for p, w, n, fpu in zip(priors, value_sums, visits, first_play):
        q = w / n if n > 0 else fpu
        out.append(q + explore * p / (1.0 + n))
    return out


def argmax(scores: Sequence[float]) -> int:
    """Index of the largest score; ties go to the earliest (the first sampled step)."""
    best = 0
    for i, s in enumerate(scores):
        if s > scores[best]:
            best = i
    return best
