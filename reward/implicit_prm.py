"""PRIME's implicit process reward model (Cui et al. 2025, "Process Reinforcement through Implicit
Rewards"; Yuan et al. 2024, "Free Process Rewards without Process Labels").

A language model pi_phi (initialised from the policy) and a frozen reference pi_ref (the policy) define a
reward for every response token:

    r_t = beta * (log pi_phi(y_t | y_<t) - log pi_ref(y_t | y_<t))

Trained on outcome labels alone, with the cross-entropy of sigmoid(sum_t r_t) against the response's 0/1
outcome, the partial sums Q_t = sum_{s <= t} r_s become process values: sigmoid(Q) at a step's last token
scores that state (0.5 for the bare prompt), the same role an explicit PRM's head plays, so
:class:`ImplicitPRM` plugs into search and dense rewards exactly as ``reward.prm.ProcessRewardModel`` does.
:meth:`ImplicitPRMTrainer.update` is one gradient step on a batch of verified responses: the step
``arbor prm prm.kind=implicit`` repeats offline, and the one a rollout actor can take as its trees arrive,
PRIME's online update.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from arbor.core.batching import right_pad
from arbor.core.tasks.base import STEP_SEP
from arbor.reward.prm import ProcessRewardModel, encode_segments


def token_log_ratios(prm_logits: torch.Tensor, ref_logits: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """log pi_phi - log pi_ref of each token given the ones before it: [B, T, V] x2, [B, T] -> [B, T].

    Position 0 (no prediction for the first token) is 0.
    """
    target = ids[:, 1:, None]  # [B, T-1, 1]
    lp = torch.log_softmax(prm_logits[:, :-1].float(), -1).gather(-1, target).squeeze(-1)  # [B, T-1]
    lr = torch.log_softmax(ref_logits[:, :-1].float(), -1).gather(-1, target).squeeze(-1)
    return F.pad(lp - lr, (1, 0))


def response_mask(mask: torch.Tensor, prompt_lengths: Sequence[int]) -> torch.Tensor:
    """[B, T] 1 on response tokens (real tokens at or after each row's prompt length), else 0."""
    positions = torch.arange(mask.shape[1], device=mask.device)[None, :]  # [1, T]
    starts = torch.tensor(list(prompt_lengths), device=mask.device)[:, None]  # [B, 1]
    return mask * (positions >= starts)


def implicit_q(log_ratios: torch.Tensor, resp_mask: torch.Tensor, beta: float) -> torch.Tensor:
    """Q at every position: beta x the summed log-ratios of the response tokens up to it ([B, T] -> [B, T])."""
    return beta * torch.cumsum(log_ratios * resp_mask, dim=-1)


def implicit_prm_loss(sequence_reward: torch.Tensor, outcome: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of sigmoid(sum_t r_t) against the 0/1 outcome ([B], [B] -> scalar): PRIME's PRM loss."""
    return F.binary_cross_entropy_with_logits(sequence_reward, outcome.float())


class ImplicitPRM(ProcessRewardModel):
    """Scores a state with sigmoid(Q) at its last token, Q from the PRM model against the frozen reference."""

    def __init__(
        self,
        model: PreTrainedModel,
        reference: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        beta: float,
        *,
        step_sep: str = STEP_SEP,
        batch_size: int = 32,
    ) -> None:
        super().__init__(model, tokenizer, None, step_sep=step_sep, batch_size=batch_size)
        self.reference = reference.eval().requires_grad_(False)
        self.beta = beta

    def q_values(self, ids: torch.Tensor, mask: torch.Tensor, prompt_lengths: Sequence[int]) -> torch.Tensor:
        """Q at every position ([B, T]); differentiable in the PRM model's weights, never the reference's."""
        logits = self.model(input_ids=ids, attention_mask=mask).logits
        with torch.no_grad():
            ref_logits = self.reference(input_ids=ids, attention_mask=mask).logits
        ratios = token_log_ratios(logits, ref_logits, ids)
        return implicit_q(ratios, response_mask(mask, prompt_lengths), self.beta)

    def state_values(self, ids: torch.Tensor, mask: torch.Tensor, prompt_lengths: list[int]) -> torch.Tensor:
        return torch.sigmoid(self.q_values(ids, mask, prompt_lengths))


@dataclass(frozen=True)
class VerifiedResponse:
    ids: list[int]  # prompt + response tokens (the PRM tokenizer's, segment by segment)
    prompt_length: int  # tokens of the prompt
    outcome: float  # the verifier's 0/1


def verified_responses(trees: Sequence[Any], tokenizer: PreTrainedTokenizerBase) -> list[VerifiedResponse]:
    """Every scored terminal path of some search trees (``.prompt``, ``.terminals()``, ``.path(node)``),
    tokenized segment by segment as the PRM scores them: what the implicit PRM learns from."""
    out = []
    for tree in trees:
        for leaf in tree.terminals():
            if leaf.outcome is not None:
                ids, ends = encode_segments(tokenizer, [tree.prompt, *(n.text for n in tree.path(leaf)[1:])])
                out.append(VerifiedResponse(ids, ends[0] + 1, float(leaf.outcome)))
    return out


class ImplicitPRMTrainer:
    """AdamW on the implicit PRM's model; ``update`` is one step of PRIME's loss on a batch of responses."""

    def __init__(self, prm: ImplicitPRM, lr: float, weight_decay: float = 0.0, grad_clip: float = 1.0) -> None:
        self.prm = prm
        self.grad_clip = grad_clip
        self.optimizer = torch.optim.AdamW(prm.model.parameters(), lr=lr, weight_decay=weight_decay)

    def update(self, batch: Sequence[VerifiedResponse]) -> float:
        """One gradient step; returns the loss before it."""
        prm = self.prm
        ids, mask = right_pad([r.ids for r in batch], prm.pad_id, prm.device)
        lengths = mask.sum(-1) - 1  # [B] index of each row's last real token
        prm.model.train()
        q = prm.q_values(ids, mask, [r.prompt_length for r in batch])  # [B, T]
        reward = q.gather(-1, lengths[:, None]).squeeze(-1)  # [B] the whole response's implicit reward
        loss = implicit_prm_loss(reward, torch.tensor([r.outcome for r in batch], device=prm.device))
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(prm.model.parameters(), self.grad_clip)
        self.optimizer.step()
        prm.model.eval()
        return float(loss.detach())
