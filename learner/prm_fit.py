"""Fit a process reward model's head on a frozen trunk: regression on step labels, or pairwise on siblings.

The features are the trunk's final hidden states at every labelled step prefix (``value_fit.prefix_features``,
one row per tree node). Regression is ``value_fit.fit_value_head`` on the labels (binary cross-entropy, which
also takes Math-Shepherd's soft labels). The pairwise loss is Bradley-Terry on sibling preference pairs
(CPO, Zhang et al. 2024; rStar-Math's process preference model, Guan et al. 2025):

    loss = -log sigmoid(z_preferred - z_rejected),  z = the head's logit

It ranks siblings without asking for calibrated values; only differences of logits are learned, so the
bias keeps its initial value (the labels' base rate) and the scores stay in a sensible range.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from arbor.core.config import ValueConfig
from arbor.core.model import ValueHead
from arbor.learner.value_fit import PrefixFeatures, train_head


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
