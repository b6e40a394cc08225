"""Fit the value head the OVM way (Yu et al. 2024, "OVM, Outcome-supervised Value Models for Planning
in Mathematical Reasoning").

Sample responses from the policy on training problems and verify each; every step prefix of a sample
(the token that ends the prompt, and the token that ends each step) is labelled with that sample's final
0/1 outcome. Regressing V(prefix) on those labels estimates P(success | prefix) under the policy: the
value a search needs to rank partial solutions without ever seeing the reference.

The policy trunk is frozen, so the hidden state at every labelled position is read once
(:func:`prefix_features`) and the head is a logistic regression on those features, trained with the
same engine as every other update. Held-out problems (never fitted) give the calibration and AUC report.
"""

from __future__ import annotations

import dataclasses
import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from transformers import PreTrainedModel

from arbor.core.batching import right_pad
from arbor.core.config import ArborConfig, SearchConfig, ValueConfig
from arbor.core.model import ValueHead, forward_with_hidden
from arbor.core.tasks import Problem, Task
from arbor.core.tasks.split import VALUE_SEEDS, distinct_problems, problems_to_skip, stretch_start
from arbor.core.tree import SearchTree
from arbor.learner.engine import OptimConfig, build_engine


@dataclass(frozen=True)
class LabelledSequence:
    input_ids: list[int]  # prompt + response tokens, exactly as sampled
    positions: list[int]  # indices into input_ids whose state is labelled: prompt end, then each step's end
    outcome: float  # the sample's verified outcome (0 or 1), the label of every position
    group: str  # problem uid: the held-out split is by problem, so no problem is both fitted and scored
    labels: tuple[float, ...] | None = None  # a label per position instead of the outcome (a PRM's step labels)


@dataclass
class PrefixFeatures:
    hidden: torch.Tensor  # [N, H] final hidden state at each labelled position
    targets: torch.Tensor  # [N] outcome of the sample the prefix belongs to
    final: torch.Tensor  # [N] bool: the prefix is the whole response (the terminal state)


def prefix_ends(segment_lengths: Sequence[int]) -> list[int]:
    """Index of the last token of each segment (prompt, step 1, step 2, ...) in their concatenation.

    A search node's state is its prefix, and the search reads its value at the prefix's last token, so
    these are exactly the positions the value head is asked about at search time.
    """
    ends, total = [], 0
    for n in segment_lengths:
        if n <= 0:
            raise ValueError(f"a segment needs at least one token; got lengths {list(segment_lengths)}")
        total += n
        ends.append(total - 1)
    return ends


def label_chain(segments: Sequence[Sequence[int]], outcome: float, group: str) -> LabelledSequence:
    """One sampled chain (prompt segment, then its steps) with every step prefix labelled ``outcome``."""
    return LabelledSequence(
        input_ids=[t for seg in segments for t in seg],
        positions=prefix_ends([len(s) for s in segments]),
        outcome=float(outcome),
        group=group,
    )


def split_by_group(
    seqs: Sequence[LabelledSequence], holdout_fraction: float, seed: int
) -> tuple[list[LabelledSequence], list[LabelledSequence]]:
    """(fit, held-out) with whole groups (problems) on one side; at least one group on each side."""
    groups = sorted({s.group for s in seqs})
    if len(groups) < 2:
        raise ValueError(f"a held-out split needs samples from at least 2 problems; got {len(groups)}")
    random.Random(seed).shuffle(groups)
    n_held = min(len(groups) - 1, max(1, round(holdout_fraction * len(groups))))
    held = set(groups[:n_held])
    return [s for s in seqs if s.group not in held], [s for s in seqs if s.group in held]


@torch.no_grad()
def prefix_features(
    model: PreTrainedModel, seqs: Sequence[LabelledSequence], batch_size: int, pad_id: int
) -> PrefixFeatures:
    """Final hidden states of the frozen trunk at every labelled position (right-padded batches)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    hidden, targets, final = [], [], []
    for start in range(0, len(seqs), batch_size):
        chunk = seqs[start : start + batch_size]
        ids, mask = right_pad([list(s.input_ids) for s in chunk], pad_id)
        _, h, _ = forward_with_hidden(model, ids.to(device), mask.to(device))  # h [B, T, H]
        for i, s in enumerate(chunk):
            hidden.append(h[i, s.positions].float().cpu())  # [P_i, H]
            targets += list(s.labels) if s.labels is not None else [s.outcome] * len(s.positions)
            final += [False] * (len(s.positions) - 1) + [True]
    model.train(was_training)
    return PrefixFeatures(torch.cat(hidden), torch.tensor(targets), torch.tensor(final))


def value_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy of V = sigmoid(logits) against 0/1 outcomes ([N], [N] -> scalar).

    BCE on logits rather than MSE on sigmoid values: the same minimiser (P(success | prefix)) with
    gradients that do not vanish when the head is confidently wrong.
    """
    return torch.nn.functional.binary_cross_entropy_with_logits(logits, targets.float())


def fit_value_head(
    features: PrefixFeatures,
    cfg: ValueConfig,
    on_step: Callable[[int, dict[str, float]], None] | None = None,
) -> ValueHead:
    """A fresh :class:`ValueHead` regressed on ``features`` for ``cfg.steps`` minibatch steps.

    The bias starts at the logit of the base rate, so step 0 already predicts the mean outcome.
    """
    n, width = features.hidden.shape
    if n == 0:
        raise ValueError("no labelled prefixes to fit the value head on (value.problems, value.samples_per_problem)")
    head = ValueHead(width)
    rate = float(features.targets.float().mean().clamp(1e-3, 1 - 1e-3))
    with torch.no_grad():
        head.proj.bias.fill_(math.log(rate / (1 - rate)))

    def batch_loss(gen: torch.Generator) -> torch.Tensor:
        idx = torch.randint(0, n, (min(cfg.batch_size, n),), generator=gen)
        return value_loss(head.proj(features.hidden[idx]).squeeze(-1), features.targets[idx])

    return train_head(head, batch_loss, cfg, on_step, "value")


def train_head(
    head: ValueHead,
    batch_loss: Callable[[torch.Generator], torch.Tensor],
    cfg: ValueConfig,
    on_step: Callable[[int, dict[str, float]], None] | None = None,
    name: str = "value",
) -> ValueHead:
    """``cfg.steps`` AdamW steps (cosine decay) on ``batch_loss(generator)``, the minibatch sampler's
    generator seeded with ``cfg.seed``; logs ``<name>/loss`` and ``<name>/lr``."""
    optim = OptimConfig(cfg.lr, cfg.weight_decay, 1.0, max(1, cfg.steps // 20), cfg.steps, 0.1)
    engine = build_engine(head, "torch", optim, batch_size=cfg.batch_size)
    gen = torch.Generator().manual_seed(cfg.seed)
    head.train()
    for step in range(1, cfg.steps + 1):
        loss = batch_loss(gen)
        engine.step(loss)
        if on_step is not None:
            on_step(step, {f"{name}/loss": float(loss.detach()), f"{name}/lr": engine.lr})
    return head.eval()


def roc_auc(scores: Sequence[float], labels: Sequence[float]) -> float | None:
    """Area under the ROC curve: P(score of a random positive > a random negative), ties counting half.

    None when one class is missing (the AUC is undefined). Mann-Whitney U from average ranks.
    """
    pairs = sorted(zip(scores, labels), key=lambda p: p[0])
    pos = sum(1 for _, y in pairs if y > 0.5)
    neg = len(pairs) - pos
    if pos == 0 or neg == 0:
        return None
    rank_sum, i = 0.0, 0
    while i < len(pairs):
        j = i
        while j < len(pairs) and pairs[j][0] == pairs[i][0]:
            j += 1
        avg_rank = (i + 1 + j) / 2  # ranks i+1 .. j share their mean
        rank_sum += avg_rank * sum(1 for _, y in pairs[i:j] if y > 0.5)
        i = j
    return (rank_sum - pos * (pos + 1) / 2) / (pos * neg)


def calibration(scores: Sequence[float], labels: Sequence[float], bins: int) -> tuple[float, list[dict[str, float]]]:
    """Expected calibration error over ``bins`` equal-width bins of predicted value, and the reliability table.

    ECE = sum over bins of (share of predictions in the bin) * |mean prediction - mean outcome|.
    """
    table: list[dict[str, float]] = []
    ece = 0.0
    for b in range(bins):
        lo, hi = b / bins, (b + 1) / bins
        inside = [(s, y) for s, y in zip(scores, labels) if lo <= s < hi or (b == bins - 1 and s == 1.0)]
        if not inside:
            continue
        mean_s = sum(s for s, _ in inside) / len(inside)
        mean_y = sum(y for _, y in inside) / len(inside)
        ece += len(inside) / len(scores) * abs(mean_s - mean_y)
        table.append({"low": lo, "high": hi, "count": float(len(inside)), "predicted": mean_s, "observed": mean_y})
    return ece, table


@torch.no_grad()
def value_report(head: ValueHead, features: PrefixFeatures, bins: int) -> dict:
    """How well V(prefix) predicts the sample's outcome on ``features``: AUC, ECE, Brier, base rate.

    ``final_auc`` scores the terminal states alone: at evaluation the search ranks finished answers by it.
    """
    values = head(features.hidden).tolist()  # [N]
    labels = features.targets.tolist()
    final = features.final.tolist()
    ece, table = calibration(values, labels, bins)
    n = max(len(values), 1)
    return {
        "prefixes": len(values),
        "base_rate": sum(labels) / n,
        "mean_value": sum(values) / n,
        "auc": roc_auc(values, labels),
        "final_auc": roc_auc([v for v, f in zip(values, final) if f], [y for y, f in zip(labels, final) if f]),
        "ece": ece,
        "brier": sum((v - y) ** 2 for v, y in zip(values, labels)) / n,
        "reliability": table,
    }


def value_problems(task: Task, cfg: ArborConfig) -> list[Problem]:
    """``value.problems`` distinct training problems for the value fit, none that rollouts skip (held out, or
    an SFT demonstration: :func:`arbor.core.tasks.split.problems_to_skip`). The policy has memorised the SFT pool,
    so its outcomes there would teach the head values it never meets in search."""
    first = stretch_start(VALUE_SEEDS, cfg.value.seed)
    skip = problems_to_skip(cfg, task)
    return distinct_problems(task, cfg.value.problems, first, cfg.value.difficulty_mix, skip)


def value_sampling_config(cfg: ArborConfig) -> SearchConfig:
    """Best-of-N chains at ``value.temperature``, verified (training rollouts may see the reference)."""
    v = cfg.value
    return dataclasses.replace(
        cfg.search,
        kind="best_of_n",
        best_of_n=dataclasses.replace(cfg.search.best_of_n, num_samples=v.samples_per_problem),
        temperature=v.temperature,
        terminal_value="verifier",
        trees_in_flight=max(1, cfg.search.max_batch_rows // v.samples_per_problem),
        seed=v.seed,
    )


def labelled_chains(tree: SearchTree) -> list[LabelledSequence]:
    """Every sampled chain of a best-of-N tree, its step prefixes labelled with its verified outcome."""
    return [
        label_chain(tree.segments(leaf), leaf.outcome, tree.problem_uid)
        for leaf in tree.terminals()
        if leaf.outcome is not None
    ]
