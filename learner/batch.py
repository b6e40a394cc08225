"""Step samples packed into one learner batch: rows of shared prefixes (``pack_rows``), the masks and targets
the loss reads (``collate_steps``), and the visit-share groups of sibling steps (``visit_groups``)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from arbor.core.samples import IMITATION_SOURCES, StepSample, in_policy_lineage


@dataclass
class StepBatch:
    input_ids: torch.Tensor  # [R, L] packed rows (a path of states and actions), right-padded
    attention_mask: torch.Tensor  # [R, L]
    action_mask: torch.Tensor  # [R, L-1] target positions holding an action token (target j is input j + 1)
    behav_logp: torch.Tensor  # [R, L-1] behaviour log-probs at the action targets, 0 elsewhere
    advantages: torch.Tensor  # [R, L-1] each step's advantage on its action targets
    value_targets: torch.Tensor  # [R, L] V(parent) at a state's last token, V(child) at an action's last
    value_mask: torch.Tensor  # [R, L] those positions
    rewards: torch.Tensor  # [S] per sample: outcome if the step is terminal, else 0
    terminal: torch.Tensor  # [S] bool
    sample_row: torch.Tensor  # [S] the row that holds each sample
    state_end: torch.Tensor  # [S] input index (in its row) of the state's last token
    action_end: torch.Tensor  # [S] input index of the action's last token
    lags: list[int]  # learner version minus sample version, per sample of the policy lineage (in_policy_lineage)
    num_tokens: int  # real tokens in the batch
    imitate_mask: torch.Tensor | None = None  # [R, L-1] action targets of imitated samples (IMITATION_SOURCES)
    visit_group: torch.Tensor | None = None  # [S] sibling group of each step with a visit share, else -1
    visit_share: torch.Tensor | None = None  # [S] its visit share (0 where none)

    def to(self, device: torch.device) -> StepBatch:
        """The batch with every tensor on ``device`` (collation builds them on the CPU)."""
        moved = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return StepBatch(**{k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in moved.items()})


def pack_rows(
    seqs: list[tuple[int, ...]], spans: list[tuple[int, int]], max_len: int | None = None
) -> tuple[list[tuple[int, ...]], list[int]]:
    """Place each sample's sequence (state + action) in a row that starts with it, longest first.

    Samples of one tree share prefixes: the sample for step k of a path is a prefix of the sample for step
    k + 1, so the whole path trains as one row instead of k rows re-reading the same state (about 3x fewer
    tokens for countdown). ``spans`` are the samples' action ranges; two samples never claim overlapping
    positions of one row (an identical step from another tree gets a row of its own). Returns the rows and
    each sample's row index.
    """
    rows: list[tuple[int, ...]] = []
    claimed: list[list[tuple[int, int]]] = []
    owners: dict[tuple[int, ...], list[int]] = {}  # every prefix of a row -> rows that start with it
    where = [0] * len(seqs)
    for i in sorted(range(len(seqs)), key=lambda k: -len(seqs[k])):
        lo, hi = spans[i]
        for r in owners.get(seqs[i], []):
            fits = max_len is None or len(rows[r]) <= max_len or len(seqs[i]) > max_len  # never cut a short one
            if fits and all(hi <= a or lo >= b for a, b in claimed[r]):
                break
        else:
            r = len(rows)
            rows.append(seqs[i])
            claimed.append([])
            for n in range(1, len(seqs[i]) + 1):
                owners.setdefault(seqs[i][:n], []).append(r)
        claimed[r].append((lo, hi))
        where[i] = r
    return rows, where


def collate_steps(samples: list[StepSample], pad_id: int, max_len: int, current_version: int) -> StepBatch:
    """Pack step samples into a :class:`StepBatch` (:func:`pack_rows`); a row longer than ``max_len`` loses
    tokens from the left, as long as every action in it keeps at least one state token before it."""
    if not samples:
        raise ValueError("collate_steps needs at least one sample")
    for s in samples:
        if not s.action_tokens:
            raise ValueError(f"step sample of problem {s.problem_uid!r} has no action tokens")
    seqs = [tuple(s.state_tokens) + tuple(s.action_tokens) for s in samples]
    spans = [(len(s.state_tokens), len(s.state_tokens) + len(s.action_tokens)) for s in samples]
    rows, where = pack_rows(seqs, spans, max_len)
    cuts = [max(0, len(r) - max_len) for r in rows]
    for s, r in zip(samples, where):
        if cuts[r] >= len(s.state_tokens):
            raise ValueError(
                f"step sample of problem {s.problem_uid!r}: its action ({len(s.action_tokens)} tokens after "
                f"{len(s.state_tokens)} state tokens) does not fit model.max_seq_len={max_len}"
            )
    width = max(len(r) - c for r, c in zip(rows, cuts))
    b = len(rows)
    ids = torch.full((b, width), pad_id, dtype=torch.long)
    attn = torch.zeros((b, width), dtype=torch.long)
    action_mask = torch.zeros((b, width - 1), dtype=torch.bool)
    behav = torch.zeros((b, width - 1))
    adv = torch.zeros((b, width - 1))
    vt = torch.zeros((b, width))
    vm = torch.zeros((b, width), dtype=torch.bool)
    imitate = torch.zeros((b, width - 1), dtype=torch.bool)
    for r, (row, cut) in enumerate(zip(rows, cuts)):
        ids[r, : len(row) - cut] = torch.tensor(row[cut:])
        attn[r, : len(row) - cut] = 1
    n = len(samples)
    state_end = torch.zeros(n, dtype=torch.long)
    action_end = torch.zeros(n, dtype=torch.long)
    for i, (s, r) in enumerate(zip(samples, where)):
        n_state = len(s.state_tokens) - cuts[r]
        n_act = len(s.action_tokens)
        # input position p (p >= 1) is predicted at target index p - 1
        action_mask[r, n_state - 1 : n_state - 1 + n_act] = True
        behav[r, n_state - 1 : n_state - 1 + n_act] = torch.tensor(s.behaviour_logprobs)
        adv[r, n_state - 1 : n_state - 1 + n_act] = s.advantage
        state_end[i], action_end[i] = n_state - 1, n_state + n_act - 1
        if s.source in IMITATION_SOURCES:  # imitated, not weighted by an advantage; no value target off-policy
            imitate[r, n_state - 1 : n_state - 1 + n_act] = True
            continue
        vt[r, n_state - 1], vm[r, n_state - 1] = s.state_value, True
        vt[r, n_state + n_act - 1], vm[r, n_state + n_act - 1] = s.value_target, True
    return StepBatch(
        input_ids=ids,
        attention_mask=attn,
        action_mask=action_mask,
        behav_logp=behav,
        advantages=adv,
        value_targets=vt,
        value_mask=vm,
        rewards=torch.tensor([s.reward for s in samples]),
        terminal=torch.tensor([s.terminal for s in samples]),
        sample_row=torch.tensor(where, dtype=torch.long),
        state_end=state_end,
        action_end=action_end,
        lags=[current_version - s.policy_version for s in samples if in_policy_lineage(s)] or [0],
        num_tokens=int(attn.sum()),
        imitate_mask=imitate,
        **visit_groups(samples),
    )


def visit_groups(samples: list[StepSample]) -> dict[str, torch.Tensor]:
    """``visit_group`` and ``visit_share`` of a batch: steps with a visit share grouped by (tree, parent node)."""
    ids: dict[tuple, int] = {}
    group, share = [], []
    for s in samples:
        if s.visit_share is None or "parent" not in s.meta:
            group.append(-1)
            share.append(0.0)
            continue
        group.append(ids.setdefault((s.meta.get("tree", s.problem_uid), s.meta["parent"]), len(ids)))
        share.append(s.visit_share)
    return {"visit_group": torch.tensor(group, dtype=torch.long), "visit_share": torch.tensor(share)}
