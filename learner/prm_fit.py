"""A process reward model's data and fit: labelled rows from search trees, and a head on a frozen trunk fit by
regression on step labels or pairwise on siblings.

The features are the trunk's final hidden states at every labelled step prefix (``value_fit.prefix_features``,
one row per tree node). Regression is ``value_fit.fit_value_head`` on the labels (binary cross-entropy, which
also takes Math-Shepherd's soft labels). The pairwise loss is Bradley-Terry on sibling preference pairs
(CPO, Zhang et al. 2024; rStar-Math's process preference model, Guan et al. 2025):

    loss = -log sigmoid(z_preferred - z_rejected),  z = the head's logit

It ranks siblings without asking for calibrated values; only differences of logits are learned, so the
bias keeps its initial value (the labels' base rate) and the scores stay in a sensible range.
"""

from __future__ import annotations

import dataclasses
import math
import random
from collections.abc import Callable, Sequence

import torch
from transformers import PreTrainedTokenizerBase

from arbor.core.config import ValueConfig
from arbor.core.errors import DataError
from arbor.core.model import ValueHead
from arbor.core.tree import SearchTree
from arbor.learner.value_fit import LabelledSequence, PrefixFeatures, roc_auc, train_head
from arbor.reward.prm import ProcessRewardModel, encode_segments
from arbor.reward.prm_labels import StepLabel, sibling_pairs, step_labels


def pairwise_loss(preferred: torch.Tensor, rejected: torch.Tensor) -> torch.Tensor:
    """Bradley-Terry negative log-likelihood that each preferred logit beats its rejected one ([P], [P] -> scalar)."""
    return -torch.nn.functional.logsigmoid(preferred - rejected).mean()


def pair_accuracy(scores: torch.Tensor, pairs: torch.Tensor) -> float | None:
    """Share of pairs ([P, 2] row indices into ``scores`` [N]) whose preferred row scores higher; ties half."""
    if len(pairs) == 0:
        return None
    a, b = scores[pairs[:, 0]], scores[pairs[:, 1]]
    return float(((a > b).float() + 0.5 * (a == b).float()).mean())


def fit_pairwise_head(
    features: PrefixFeatures,
    pairs: torch.Tensor,
    cfg: ValueConfig,
    on_step: Callable[[int, dict[str, float]], None] | None = None,
) -> ValueHead:
    """A fresh head trained on ``pairs`` ([P, 2]: preferred row, rejected row of ``features``)."""
    if len(pairs) == 0:
        raise ValueError("no sibling preference pairs to fit on: trees need siblings with different outcomes")
    head = ValueHead(features.hidden.shape[1])
    rate = float(features.targets.float().mean().clamp(1e-3, 1 - 1e-3))
    with torch.no_grad():
        head.proj.bias.fill_(math.log(rate / (1 - rate)))

    def batch_loss(gen: torch.Generator) -> torch.Tensor:
        idx = torch.randint(0, len(pairs), (min(cfg.batch_size, len(pairs)),), generator=gen)
        chosen = pairs[idx]  # [B, 2]
        logits = head.proj(features.hidden[chosen.reshape(-1)]).view(-1, 2)  # [B, 2]
        return pairwise_loss(logits[:, 0], logits[:, 1])

    return train_head(head, batch_loss, cfg, on_step, "prm")


@dataclasses.dataclass
class LabelledTrees:
    """Every labelled node of some trees as one feature row, and the sibling pairs as row indices."""

    seqs: list[LabelledSequence]
    steps: list[StepLabel]  # one per feature row, in row order
    rows: list[tuple[int, int]]  # (tree index, node id) of each feature row
    pairs: torch.Tensor  # [P, 2] (preferred row, rejected row)


def label_trees(
    trees: Sequence[SearchTree], tokenizer: PreTrainedTokenizerBase, label: str, min_completions: int
) -> LabelledTrees:
    """Each labelled node once: the paths to the leaves are walked in order and a node is taken on the first
    path that reaches it, so shared prefixes are not counted twice."""
    seqs: list[LabelledSequence] = []
    steps: list[StepLabel] = []
    rows: list[tuple[int, int]] = []
    pairs: list[tuple[int, int]] = []
    for t, tree in enumerate(trees):
        labels = {s.node: s for s in step_labels(tree, min_completions)}
        row: dict[int, int] = {}
        for leaf in (n for n in tree.nodes if not n.children):
            path = tree.path(leaf)
            ids, ends = encode_segments(tokenizer, [tree.prompt, *(n.text for n in path[1:])])
            new = [(n, end) for n, end in zip(path, ends) if n.id in labels and n.id not in row]
            if not new:
                continue
            for n, _ in new:
                row[n.id] = len(steps)
                steps.append(labels[n.id])
                rows.append((t, n.id))
            values = tuple(labels[n.id].soft if label == "soft" else labels[n.id].hard for n, _ in new)
            seqs.append(LabelledSequence(ids, [end for _, end in new], 0.0, tree.problem_uid, values))
        pairs += [(row[a], row[b]) for a, b in sibling_pairs(tree, min_completions) if a in row and b in row]
    return LabelledTrees(seqs, steps, rows, torch.tensor(pairs, dtype=torch.long).view(-1, 2))


def split_trees(trees: Sequence[SearchTree], holdout_fraction: float, seed: int):
    """(fit, held-out) trees with whole problems on one side; at least one problem on each side."""
    groups = sorted({t.problem_uid for t in trees})
    if len(groups) < 2:
        raise DataError(f"a held-out split needs trees of at least 2 problems; got {len(groups)}")
    random.Random(seed).shuffle(groups)
    held = set(groups[: min(len(groups) - 1, max(1, round(holdout_fraction * len(groups))))])
    return [t for t in trees if t.problem_uid not in held], [t for t in trees if t.problem_uid in held]


def prm_report(scores: Sequence[float], labelled: LabelledTrees) -> dict:
    """How the PRM's scores (one per feature row) rank and fit the trees' labels; the root (the prompt) is
    left out of the step figures, being no step."""
    steps = [(s, lab) for s, lab in zip(scores, labelled.steps) if lab.node != 0]
    n = max(len(steps), 1)
    return {
        "steps": len(steps),
        "pairs": len(labelled.pairs),
        "hard_rate": sum(lab.hard for _, lab in steps) / n,
        "soft_mean": sum(lab.soft for _, lab in steps) / n,
        "mean_score": sum(s for s, _ in steps) / n,
        "multi_completion_share": sum(lab.completions > 1 for _, lab in steps) / n,
        "step_auc": roc_auc([s for s, _ in steps], [lab.hard for _, lab in steps]),
        "soft_brier": sum((s - lab.soft) ** 2 for s, lab in steps) / n,
        "pair_accuracy": pair_accuracy(torch.tensor(scores), labelled.pairs) if scores else None,
    }


def tree_scores(prm: ProcessRewardModel, trees: Sequence[SearchTree], labelled: LabelledTrees) -> list[float]:
    """The PRM's score of every labelled row, read by scoring each tree that has one."""
    per_tree = {t: prm.score_tree(trees[t]) for t in sorted({t for t, _ in labelled.rows})}
    return [per_tree[t][node] for t, node in labelled.rows]  # type: ignore[misc]
