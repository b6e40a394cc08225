"""The actor-critic update on search-tree step samples (plain torch: a learner rank wraps this class).

One learner step:

1. ``collate_steps`` packs each :class:`StepSample` as one row ``state + action`` (right-padded). The
   policy loss covers the action tokens; the value head is trained at two positions per row: the state's
   last token toward V(parent) and the action's last token toward V(child), both Monte-Carlo values
   read off the tree.
2. One forward pass gives log pi_theta of the action tokens (at the behaviour temperature, so the
   importance weights compare like with like) and the values; the output head runs on the action
   positions only (:func:`target_logprobs`). With one gradient step per batch the
   proximal policy is the pre-update policy: ``prox_logp = logp.detach()``.
3. ``total_loss`` (decoupled PPO: behaviour weight pi_prox / pi_behav capped or masked) or plain PPO
   anchored at the behaviour policy, or one-step V-trace with the value head as critic.
4. A non-finite loss skips the step (nothing is applied) and is counted.
"""

from __future__ import annotations

import dataclasses
import math
import time

import torch
from torch import nn
from transformers import PreTrainedModel

from arbor.core.channels import published_state
from arbor.core.config import TrainConfig
from arbor.core.model import ValueHead
from arbor.core.samples import StepSample
from arbor.learner.batch import StepBatch, collate_steps
from arbor.learner.engine import OptimConfig, build_engine
from arbor.learner.losses import (
    LossCoefficients,
    LossInputs,
    combine,
    entropy_of_logits,
    imitation_loss,
    masked_mean,
    regularisers,
    total_loss,
    visit_distillation_loss,
    vtrace_step_loss,
)


class PolicyWithValue(nn.Module):
    """A causal LM and its scalar value head as one module, so one engine updates both."""

    def __init__(self, model: PreTrainedModel, value_head: ValueHead, value_trunk_grad: bool = False):
        super().__init__()
        self.model = model
        self.value_head = value_head
        self.value_trunk_grad = value_trunk_grad  # False: the value loss trains the head only, not the shared trunk
        self.bucket_ratio = 0.6  # rows shorter than this share of the longest run in a narrower bucket (0: never)

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, targets: torch.Tensor, temperature: float
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(log-probs [B, L-1] at ``targets``, their scaled logits [N, V], values [B, L]): :func:`target_logprobs`.

        Rows of very different lengths run in length buckets (:func:`length_buckets`), each at its own width:
        right padding changes nothing a causal model computes, so the result is the one-call result, without
        padding every short row of tree steps to the longest journey trace.
        """
        buckets = length_buckets(attention_mask.sum(dim=1).tolist(), self.bucket_ratio)
        if len(buckets) == 1:
            return self._forward(input_ids, attention_mask, targets, temperature)
        rows, width = input_ids.shape
        logp = values = None
        order = torch.arange(rows * (width - 1), device=input_ids.device).view(rows, width - 1)
        places, parts = [], []
        for members, w in buckets:
            idx = torch.tensor(members, device=input_ids.device)
            lp, lg, v = self._forward(input_ids[idx, :w], attention_mask[idx, :w], targets[idx, : w - 1], temperature)
            if logp is None:
                logp = lp.new_zeros((rows, width - 1))
                values = v.new_zeros((rows, width))
            logp = logp.index_put((idx[:, None], torch.arange(w - 1, device=idx.device)[None]), lp)
            values = values.index_put((idx[:, None], torch.arange(w, device=idx.device)[None]), v)
            places.append(order[idx, : w - 1][targets[idx, : w - 1]])
            parts.append(lg)
        logits = torch.cat(parts)[torch.argsort(torch.cat(places))]  # row-major over the targets, as in one call
        return logp, logits, values

    def _forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, targets: torch.Tensor, temperature: float
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        hidden = self.model.base_model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
        hidden = hidden.last_hidden_state
        logp, logits = target_logprobs(self.model, hidden, input_ids, targets, temperature)
        return logp, logits, self.value_head(hidden if self.value_trunk_grad else hidden.detach())


def length_buckets(lengths: list[int], ratio: float = 0.6) -> list[tuple[list[int], int]]:
    """Rows grouped by length, longest first: (row indices, width) where every row is at least ``ratio`` of
    its bucket's width, so no bucket pads a row to more than 1 / ratio of its length."""
    out: list[tuple[list[int], int]] = []
    for i in sorted(range(len(lengths)), key=lambda k: -lengths[k]):
        if out and lengths[i] >= ratio * out[-1][1]:
            out[-1][0].append(i)
        else:
            out.append(([i], max(int(lengths[i]), 2)))
    return out


def token_logprobs(logits: torch.Tensor, input_ids: torch.Tensor, temperature: float) -> torch.Tensor:
    """log pi(target token) at every target position: [B, L-1], logits scaled by 1 / temperature."""
    scaled = logits[:, :-1].float() / temperature
    return torch.log_softmax(scaled, dim=-1).gather(-1, input_ids[:, 1:, None]).squeeze(-1)


def target_logprobs(
    model: PreTrainedModel, hidden: torch.Tensor, input_ids: torch.Tensor, targets: torch.Tensor, temperature: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """log pi(target token) at the target positions ``targets`` [B, L-1] only (0 elsewhere), and the scaled
    logits there [N, V] (N = targets.sum(), row-major order).

    The output head runs on the action positions alone: the full [B, L, V] logits of a real vocabulary are
    most of a learner's memory (SmolLM2's 49,152 tokens x 32 GSM8K rows x their prompts: 18 GB once copied
    for the softmax and its gradient), and the state tokens, most of every row, need none of them.
    ``hidden`` is the trunk's last hidden state [B, L, H].
    """
    logits = model.get_output_embeddings()(hidden[:, :-1][targets]).float() / temperature  # [N, V]
    picked = torch.log_softmax(logits, dim=-1).gather(-1, input_ids[:, 1:][targets][:, None]).squeeze(-1)
    logp = torch.zeros(targets.shape, dtype=picked.dtype, device=picked.device).masked_scatter(targets, picked)
    return logp, logits


class ActorCriticLearner:
    """Policy + value head under one engine (DeepSpeed or torch); ``update`` is one learner step."""

    def __init__(
        self,
        model: PreTrainedModel,
        value_head: ValueHead,
        cfg: TrainConfig,
        *,
        pad_id: int,
        max_len: int,
        temperature: float,
        rank_batch_size: int,
        reference: PreTrainedModel | None = None,
        compute_dtype: str = "float32",
    ):
        if temperature <= 0:
            raise ValueError("the learner needs the behaviour temperature (search.temperature > 0)")
        self.cfg = cfg
        self.pad_id = pad_id
        self.max_len = max_len
        self.temperature = temperature
        if cfg.gradient_checkpointing:
            if not model.supports_gradient_checkpointing:
                raise ValueError(f"train.gradient_checkpointing: {type(model).__name__} does not support it")
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        self.net = PolicyWithValue(model, value_head, cfg.value_trunk_grad)
        optim = OptimConfig(cfg.lr, cfg.weight_decay, cfg.grad_clip, cfg.warmup_steps, cfg.steps, cfg.min_lr_ratio)
        self.compute_dtype = str(compute_dtype)  # model.dtype: the forward's autocast, and what actors receive
        self.engine = build_engine(
            self.net, cfg.engine, optim, rank_batch_size, zero_stage=cfg.zero_stage, compute_dtype=self.compute_dtype
        )
        self.net = self.engine.module
        self.net.train()
        self.reference = reference.eval() if reference is not None else None
        if cfg.kl_coef and reference is None:
            raise ValueError("train.kl_coef > 0 needs a frozen reference model")
        self.coefs = LossCoefficients(
            clip_eps=cfg.clip_eps,
            is_cap=cfg.decoupled_ppo.is_cap,
            is_mode=str(cfg.decoupled_ppo.is_mode),  # type: ignore[arg-type]
            value_coef=cfg.value_coef,
            entropy_coef=cfg.entropy_coef,
            kl_coef=cfg.kl_coef,
            policy_coef=cfg.policy_coef,
        )
        self.skipped_nonfinite = 0
        self.steps = 0

    @property
    def model(self) -> PreTrainedModel:
        return self.net.model

    @property
    def device(self) -> torch.device:
        return next(self.net.parameters()).device

    @property
    def value_head(self) -> ValueHead:
        return self.net.value_head

    def update(self, samples: list[StepSample], current_version: int) -> dict[str, float]:
        """One gradient step on ``samples`` (trained by policy ``current_version``); returns metrics."""
        t0 = time.perf_counter()
        batch = collate_steps(samples, self.pad_id, self.max_len, current_version).to(self.device)
        logp, logits, values = self.engine(
            input_ids=batch.input_ids,
            attention_mask=batch.attention_mask,
            targets=batch.action_mask,
            temperature=self.temperature,
        )  # [B, L-1], [N, V] at the action targets, [B, L]
        ref_logp = None
        if self.reference is not None:
            with torch.no_grad():
                ref = self.reference.base_model(input_ids=batch.input_ids, attention_mask=batch.attention_mask)
                ref_logp, _ = target_logprobs(
                    self.reference, ref.last_hidden_state, batch.input_ids, batch.action_mask, self.temperature
                )
        metrics = self._loss(batch, logits, logp, values, ref_logp)
        loss = metrics.pop("loss_tensor")
        finite = self.engine.all_agree(bool(torch.isfinite(loss)))  # every rank skips together, or the all-reduce hangs
        if not finite:
            # Skip: no backward, no optimizer step, so the weights stay as they were.
            self.skipped_nonfinite += 1
            metrics["learner/skipped_nonfinite"] = float(self.skipped_nonfinite)
            metrics["learner/step_skipped"] = 1.0
            return metrics
        grad_norm = self.engine.step(loss)
        self.steps += 1
        dt = time.perf_counter() - t0
        lags = torch.tensor(batch.lags, dtype=torch.float)
        metrics |= {
            "learner/grad_norm": grad_norm,
            "learner/lr": self.engine.lr,
            "learner/tokens_per_s": batch.num_tokens / dt,
            "learner/samples": float(len(samples)),
            "learner/step_seconds": dt,
            "learner/lag_mean": float(lags.mean()),
            "learner/lag_max": float(lags.max()),
            "learner/skipped_nonfinite": float(self.skipped_nonfinite),
            "learner/step_skipped": 0.0,
        }
        return metrics

    def _loss(
        self,
        batch: StepBatch,
        logits: torch.Tensor,
        logp: torch.Tensor,
        values: torch.Tensor,
        ref_logp: torch.Tensor | None,
    ) -> dict:
        imitated = batch.imitate_mask if batch.imitate_mask is not None else torch.zeros_like(batch.action_mask)
        mask = batch.action_mask & ~imitated  # the policy gradient's tokens: sampled steps, not imitated traces
        if self.cfg.negative_advantage_scale != 1.0:
            adv = batch.advantages
            batch.advantages = torch.where(adv < 0, adv * self.cfg.negative_advantage_scale, adv)
        token_entropy = None
        if self.coefs.entropy_coef:  # per action token [B, L-1], from the action positions' logits
            token_entropy = torch.zeros_like(logp).masked_scatter(mask, entropy_of_logits(logits))
        inputs = LossInputs(
            logp=logp,
            # Plain PPO (the AReaL baseline) anchors the trust region at the behaviour policy with no separate
            # off-policy weight: decoupled PPO with prox = behav and an uncapped weight (identically 1) is exactly
            # that (tests/test_losses.py). The default anchors at the pre-update policy.
            prox_logp=batch.behav_logp if self.cfg.policy_loss == "ppo" else logp.detach(),
            behav_logp=batch.behav_logp,
            advantages=batch.advantages,
            mask=mask,
            values=values,
            value_targets=batch.value_targets,
            value_mask=batch.value_mask,
            entropy=token_entropy,
            ref_logp=ref_logp,
        )
        if self.cfg.policy_loss == "vtrace":
            # x_s = the state, x_{s+1} = the state after the step (bootstrap 0 when the step is terminal);
            # a step's log-prob is its tokens' sum.
            rows = batch.sample_row
            step_logp, step_behav = _per_sample_sums(batch, torch.where(mask, logp, torch.zeros_like(logp)))
            v_state = values[rows, batch.state_end]
            v_next = torch.where(batch.terminal, torch.zeros_like(v_state), values[rows, batch.action_end])
            policy, value = vtrace_step_loss(step_logp, step_behav, batch.rewards, v_state, v_next)
            out = combine(policy, value, *regularisers(inputs, self.coefs), self.coefs)
        else:
            ppo = self.cfg.policy_loss == "ppo"
            out = total_loss(inputs, dataclasses.replace(self.coefs, is_cap=math.inf) if ppo else self.coefs)
        loss, extra = out.loss, {}
        if bool(imitated.any()):
            imitation = imitation_loss(logp, imitated)
            loss = loss + self.cfg.journey.coef * imitation
            extra["learner/imitation_loss"] = float(imitation.detach())
        extra["learner/imitated_token_fraction"] = float(imitated.sum()) / max(int(batch.action_mask.sum()), 1)
        if self.cfg.visit_coef and batch.visit_group is not None:
            step_logp, _ = _per_sample_sums(batch, torch.where(mask, logp, torch.zeros_like(logp)))
            visits = visit_distillation_loss(step_logp, batch.visit_group, batch.visit_share)
            loss = loss + self.cfg.visit_coef * visits
            extra["learner/visit_loss"] = float(visits.detach())
        entropy = out.entropy
        if not self.coefs.entropy_coef:  # still report it, without building the graph
            with torch.no_grad():
                entropy = entropy_of_logits(logits).mean() if len(logits) else logits.new_tensor(0.0)
        return extra | {
            "loss_tensor": loss,
            "learner/advantage_mean": float(batch.advantages[mask].mean()) if mask.any() else 0.0,
            "learner/reward_mean": float(batch.rewards[batch.terminal].mean()) if batch.terminal.any() else 0.0,
            "learner/value_mean": float(values[batch.value_mask].mean().detach()),
            "learner/loss": float(loss.detach()),
            "learner/policy_loss": float(out.policy.loss.detach()),
            "learner/value_loss": float(out.value.loss.detach()),
            "learner/entropy": float(entropy.detach()),
            "learner/kl": float(out.kl.detach()),
            "learner/clip_fraction": float(out.policy.clip_fraction),
            "learner/is_weight_mean": float(out.policy.is_weight_mean),
            "learner/is_weight_max": float(out.policy.is_weight_max),
            "learner/ess": float(out.policy.ess),
            "learner/is_masked_fraction": float(out.policy.masked_fraction),
            "learner/approx_kl_behav": float(masked_mean((batch.behav_logp - logp.detach()), mask)),
        }

    def publish_state(self, device: str = "cpu") -> dict[str, torch.Tensor]:
        """The weights actors load (``arbor.core.channels.published_state``), copied to ``device`` (CPU for
        the object store; the learner's GPU for the nccl channel)."""
        return published_state(self.model.state_dict(), self.value_head.state_dict(), device, self.compute_dtype)


def _per_sample_sums(batch: StepBatch, logp: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Sum of each sample's action-token log-probs (current and behaviour): [S], [S]."""
    cum = torch.cat([logp.new_zeros(logp.shape[0], 1), logp.cumsum(-1)], dim=-1)  # [R, L]
    cum_b = torch.cat([logp.new_zeros(logp.shape[0], 1), batch.behav_logp.cumsum(-1)], dim=-1)
    rows, start, end = batch.sample_row, batch.state_end, batch.action_end  # targets start..end-1
    return cum[rows, end] - cum[rows, start], cum_b[rows, end] - cum_b[rows, start]
