"""Right-padded batches of token rows: the one padding rule every training-side forward pass uses."""

from __future__ import annotations

from collections.abc import Sequence

import torch


def right_pad(
    rows: Sequence[Sequence[int]], pad_id: int, device: torch.device | str | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Token rows as [B, T] ids right-padded with ``pad_id`` and the [B, T] mask of real tokens, on ``device``.

    Right padding keeps every row's positions those of the row alone, so no position ids are needed.
    """
    if not rows:
        raise ValueError("right_pad needs at least one row")
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(list(r), dtype=torch.long)
        mask[i, : len(r)] = 1
    return ids.to(device), mask.to(device)
