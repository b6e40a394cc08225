"""Process-reward labels read off search trees, and the dense step reward a PRM gives the learner.

Pure functions over the search-tree record (``arbor.core.tree.SearchTree``):

- Math-Shepherd labels (Wang et al. 2024, "Math-Shepherd: Verify and Reinforce LLMs Step-by-step
  without Human Annotations"): a step's *soft* label is the share of the scored completions below it
  that reach a correct answer; its *hard* label is 1 if any of them does. In a tree, the completions
  from a step are the terminal leaves of its subtree.
- Sibling preference pairs (CPO, Zhang et al. 2024; rStar-Math, Guan et al. 2025): a step whose subtree
  reaches a correct answer is preferred to a sibling whose subtree reaches only wrong ones.
- Dense step rewards for the learner: reward = outcome + lambda x step score, where the step score is the
  PRM's value of the state after the step (``value``) or its change over the step (``progress``, Setlur
  et al. 2024, "Rewarding Progress"), which sums to a constant over any path and so cannot pay for length.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from arbor.core.tree import SearchTree, completion_stats


@dataclass(frozen=True)
class StepLabel:
    node: int  # node id; 0 is the root (the prompt alone)
    soft: float  # share of the scored completions below the node that are correct
    hard: float  # 1.0 if any of them is correct, else 0.0
    completions: int  # how many scored terminal leaves lie below (the estimate's sample size)


def step_labels(tree: SearchTree, min_completions: int = 1) -> list[StepLabel]:
    """Math-Shepherd hard and soft labels of every node with at least ``min_completions`` scored leaves below."""
    total, count = completion_stats(tree)
    out = []
    for node in tree.nodes:
        n = count[node.id]
        if n >= min_completions:
            out.append(StepLabel(node.id, total[node.id] / n, 1.0 if total[node.id] > 0 else 0.0, n))
    return out


def sibling_pairs(tree: SearchTree, min_completions: int = 1) -> list[tuple[int, int]]:
    """(preferred, rejected) node ids: siblings where the first's subtree reaches a correct answer and the
    second's, with at least ``min_completions`` scored leaves, reaches none."""
    total, count = completion_stats(tree)
    pairs = []
    for node in tree.nodes:
        kids = [k for k in node.children if count[k] >= min_completions]
        good = [k for k in kids if total[k] > 0]
        bad = [k for k in kids if total[k] == 0]
        pairs += [(g, b) for g in good for b in bad]
    return pairs


def dense_step_rewards(
    tree: SearchTree, scores: Sequence[float | None], coef: float, mode: str = "progress"
) -> list[float]:
    """Per node, the process reward of the step into it: ``coef`` x its step score (0 for the root).

    ``scores[i]`` is the PRM's value of node i's state; ``mode`` is ``value`` (that value) or ``progress``
    (that value minus the parent's). A node or parent without a score gets 0.
    """
    if mode not in ("value", "progress"):
        raise ValueError(f"unknown step score '{mode}'; expected value or progress")
    rewards = [0.0] * len(tree.nodes)
    for node in tree.nodes:
        if node.parent is None or scores[node.id] is None:
            continue
        if mode == "value":
            rewards[node.id] = coef * scores[node.id]
        elif scores[node.parent] is not None:
            rewards[node.id] = coef * (scores[node.id] - scores[node.parent])
    return rewards
