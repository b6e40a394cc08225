"""Actor-critic loss math: pure functions over tensors (no Ray, no DeepSpeed, no I/O, any device).

Shapes: ``B`` sequences (step samples) by ``T`` action tokens, right-padded; ``mask`` [B, T] is true on
valid tokens. Every per-token quantity is averaged over valid tokens only (:func:`masked_mean`).

NaN propagation: padded positions are selected away with ``torch.where``, so garbage there never reaches a
loss value; a NaN or inf at a *valid* position propagates into the loss (and its gradient) unchanged.
Nothing here hides a non-finite value: the learner's guard checks the loss and skips the step. Padded
positions should still hold finite numbers, since autograd through a NaN input yields a NaN gradient for
that element even when the forward pass selected it away.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

ISMode = Literal["cap", "mask"]


def masked_mean(x: Tensor, mask: Tensor) -> Tensor:
    """Mean of ``x`` over positions where ``mask`` is true; 0 when no position is valid.

    x, mask: same shape (mask bool or 0/1). Returns a scalar [].
    """
    mask = mask.bool()
    total = torch.where(mask, x, torch.zeros_like(x)).sum()
    return total / mask.sum().clamp(min=1)


def effective_sample_size(weights: Tensor, mask: Tensor) -> Tensor:
    """Normalised effective sample size (sum w)^2 / (n * sum w^2) over valid positions (Kish 1965).

    1 when all weights are equal, 1/n when a single weight carries all the mass; 0 when no weight mass.
    weights, mask: same shape. Returns a scalar [].
    """
    mask = mask.bool()
    w = torch.where(mask, weights, torch.zeros_like(weights))
    n = mask.sum()
    sum_sq = (w * w).sum()
    ess = w.sum() ** 2 / (n * sum_sq).clamp(min=torch.finfo(w.dtype).tiny)
    return torch.where(sum_sq > 0, ess, torch.zeros_like(ess))


@dataclass
class PolicyLossOutput:
    loss: Tensor  # [] minus the masked mean of the (weighted) clipped surrogate
    clip_fraction: Tensor  # [] fraction of valid tokens where the clipped term binds (gradient zeroed)
    is_weight_mean: Tensor  # [] mean of the raw behaviour weight pi_prox / pi_behav over valid tokens
    is_weight_max: Tensor  # [] max of the raw behaviour weight over valid tokens
    ess: Tensor  # [] effective sample size of the weights actually applied (after cap or mask)
    masked_fraction: Tensor  # [] fraction of valid tokens whose raw weight exceeds is_cap (dropped or truncated)


def _clipped_surrogate(logp: Tensor, anchor_logp: Tensor, advantages: Tensor, clip_eps: float) -> tuple[Tensor, Tensor]:
    """Per-token min(r A, clip(r, 1-eps, 1+eps) A) with r = pi_theta / pi_anchor, and where the clip binds.

    All inputs [B, T]; the anchor and advantages carry no gradient. Returns (surrogate, clipped) [B, T].
    """
    ratio = torch.exp(logp - anchor_logp.detach())  # [B, T]
    advantages = advantages.detach()
    unclipped = ratio * advantages
    clipped = torch.clamp(ratio, 1.0 - clip_eps, 1.0 + clip_eps) * advantages
    return torch.minimum(unclipped, clipped), clipped < unclipped


def ppo_loss(logp: Tensor, old_logp: Tensor, advantages: Tensor, mask: Tensor, clip_eps: float) -> PolicyLossOutput:
    """Plain clipped PPO (Schulman et al. 2017, "Proximal Policy Optimization Algorithms", eq. 7).

    logp: [B, T] log pi_theta of the sampled tokens (the only input with gradient).
    old_logp: [B, T] log-probs of the policy that sampled the tokens. advantages: [B, T]. mask: [B, T].
    The importance-weight stats are those of weights identically 1.
    """
    surrogate, clipped = _clipped_surrogate(logp, old_logp, advantages, clip_eps)
    ones = torch.ones_like(surrogate)
    mask = mask.bool()
    return PolicyLossOutput(
        loss=-masked_mean(surrogate, mask),
        clip_fraction=masked_mean(clipped.to(surrogate.dtype), mask),
        is_weight_mean=masked_mean(ones, mask),
        is_weight_max=ones.new_tensor(1.0),
        ess=effective_sample_size(ones, mask),
        masked_fraction=ones.new_tensor(0.0),
    )


def decoupled_ppo_loss(
    logp: Tensor,
    prox_logp: Tensor,
    behav_logp: Tensor,
    advantages: Tensor,
    mask: Tensor,
    clip_eps: float,
    is_cap: float = math.inf,
    is_mode: ISMode = "cap",
) -> PolicyLossOutput:
    """Decoupled PPO (Hilton et al. 2022, "Batch size-invariance for policy optimization"; Fu et al. 2025,
    "AReaL", eq. 5): the trust region is anchored at the proximal policy, the off-policy correction is the
    behaviour weight w = pi_prox / pi_behav,

        loss = -mean_valid( w * min(r A, clip(r, 1-eps, 1+eps) A) ),  r = pi_theta / pi_prox.

    ``is_mode="cap"`` truncates w at ``is_cap``; ``is_mode="mask"`` zeroes tokens whose w exceeds it. As in
    AReaL, dropped tokens still count in the mean's denominator (the valid-token count), so masking scales
    the loss down rather than reweighting the surviving tokens. With behav = prox (w = 1) this is plain PPO
    anchored at prox.

    logp: [B, T] log pi_theta (the only input with gradient). prox_logp: [B, T] log pi_prox, the recent
    policy the update is anchored to (the learner's weights before this round of updates). behav_logp:
    [B, T] log pi_behav, the possibly stale policy that sampled the tokens. advantages, mask: [B, T].
    """
    if is_mode not in ("cap", "mask"):
        raise ValueError(f"is_mode must be 'cap' or 'mask', got {is_mode!r}")
    mask = mask.bool()
    surrogate, clipped = _clipped_surrogate(logp, prox_logp, advantages, clip_eps)
    raw_w = torch.exp(prox_logp.detach() - behav_logp.detach())  # [B, T]
    over_cap = raw_w > is_cap
    if is_mode == "cap":
        w = torch.clamp(raw_w, max=is_cap)
    else:
        w = torch.where(over_cap, torch.zeros_like(raw_w), raw_w)
    dtype = surrogate.dtype
    return PolicyLossOutput(
        loss=-masked_mean(w * surrogate, mask),
        clip_fraction=masked_mean(clipped.to(dtype), mask),
        is_weight_mean=masked_mean(raw_w, mask),
        is_weight_max=torch.where(mask, raw_w, torch.full_like(raw_w, -math.inf)).max(),
        ess=effective_sample_size(w, mask),
        masked_fraction=masked_mean(over_cap.to(dtype), mask),
    )


@dataclass
class VTraceOutput:
    vs: Tensor  # [B, T] value targets v_s; 0 at padded steps
    pg_advantages: Tensor  # [B, T] rho_s (r_s + gamma v_{s+1} - V(x_s)); 0 at padded steps
    rhos: Tensor  # [B, T] truncated importance weights min(rho_bar, pi / mu); 0 at padded steps


@torch.no_grad()
def vtrace(
    behav_logp: Tensor,
    target_logp: Tensor,
    rewards: Tensor,
    values: Tensor,
    bootstrap_value: Tensor,
    mask: Tensor,
    discount: float | Tensor,
    rho_bar: float = 1.0,
    c_bar: float = 1.0,
) -> VTraceOutput:
    """V-trace targets and policy-gradient advantages (Espeholt et al. 2018, "IMPALA", eq. 1 and sec. 4.2).

        delta_s = rho_s (r_s + gamma_s V(x_{s+1}) - V(x_s))
        v_s - V(x_s) = delta_s + gamma_s c_s (v_{s+1} - V(x_{s+1})),  v_T - V(x_T) = 0, V(x_T) = bootstrap

    with rho_s = min(rho_bar, pi/mu) and c_s = min(c_bar, pi/mu). Computed by a backward recursion over T,
    vectorised over B. Targets carry no gradient.

    behav_logp, target_logp: [B, T] log mu(a_s|x_s) and log pi(a_s|x_s) of whole actions (for a multi-token
    step, the sum of its token log-probs). rewards, values: [B, T]. bootstrap_value: [B], V of the state
    after each row's last valid step (0 where that step is terminal). mask: [B, T], valid steps a prefix of
    each row. discount: gamma, a float or [B, T] (e.g. gamma * (1 - done)).
    """
    mask = mask.bool()
    if bool((mask[:, 1:] & ~mask[:, :-1]).any()):
        raise ValueError("vtrace needs right-padded rows: the valid steps of each row must form a prefix")
    fmask = mask.to(values.dtype)
    gamma = torch.as_tensor(discount, dtype=values.dtype, device=values.device).expand_as(values)
    ratio = torch.exp(target_logp - behav_logp)  # [B, T]
    rhos = torch.clamp(ratio, max=rho_bar) * fmask
    cs = torch.clamp(ratio, max=c_bar) * fmask
    # V(x_{s+1}): the next valid step's value, or the bootstrap after a row's last valid step.
    next_valid = torch.cat([mask[:, 1:], torch.zeros_like(mask[:, :1])], dim=1)  # [B, T]
    shifted = torch.cat([values[:, 1:], torch.zeros_like(values[:, :1])], dim=1)
    next_values = torch.where(next_valid, shifted, bootstrap_value[:, None].expand_as(values))
    deltas = rhos * (rewards + gamma * next_values - values) * fmask  # [B, T]

    diffs = torch.zeros_like(values)  # [B, T] v_s - V(x_s)
    acc = torch.zeros_like(bootstrap_value)  # [B] v_{s+1} - V(x_{s+1})
    for s in reversed(range(values.shape[1])):
        acc = deltas[:, s] + gamma[:, s] * cs[:, s] * acc * next_valid[:, s]
        diffs[:, s] = acc
    vs = (values + diffs) * fmask
    next_vs = next_values + torch.cat([diffs[:, 1:], torch.zeros_like(diffs[:, :1])], dim=1) * next_valid
    pg_advantages = rhos * (rewards + gamma * next_vs - values) * fmask
    return VTraceOutput(vs=vs, pg_advantages=pg_advantages, rhos=rhos)


@dataclass
class ValueLossOutput:
    loss: Tensor  # [] 0.5 * masked mean squared error (the clipped one where it is larger)
    clip_fraction: Tensor  # [] fraction of valid positions where the clipped error is the larger; 0 unclipped


def value_loss(
    values: Tensor, targets: Tensor, mask: Tensor, clip: float | None = None, old_values: Tensor | None = None
) -> ValueLossOutput:
    """0.5 * squared error of the value head, optionally clipped around the old values as in PPO2
    (baselines ppo2; Engstrom et al. 2020, "Implementation Matters in Deep RL", sec. 3):
    0.5 * max((V - t)^2, (V_old + clip(V - V_old, -c, c) - t)^2).

    values: [B, T] current predictions (with gradient). targets, mask: [B, T]. old_values: [B, T], needed
    when ``clip`` is set.
    """
    targets = targets.detach()
    err = (values - targets) ** 2
    if clip is None:
        return ValueLossOutput(loss=0.5 * masked_mean(err, mask), clip_fraction=err.new_tensor(0.0))
    if old_values is None:
        raise ValueError("value_loss with clip needs old_values")
    old_values = old_values.detach()
    clipped = old_values + torch.clamp(values - old_values, -clip, clip)
    err_clipped = (clipped - targets) ** 2
    return ValueLossOutput(
        loss=0.5 * masked_mean(torch.maximum(err, err_clipped), mask),
        clip_fraction=masked_mean((err_clipped > err).to(err.dtype), mask),
    )


def entropy_of_logits(logits: Tensor) -> Tensor:
    """Per-position entropy -sum_v p log p of softmax(logits): [..., V] -> [...].

    Logits of -inf (banned tokens) contribute 0, with a finite gradient.
    """
    logp = torch.log_softmax(logits, dim=-1)
    # 0 * log 0 = 0: fill before multiplying, or the backward computes 0 * -inf = NaN.
    logp = logp.masked_fill(torch.isneginf(logp), 0.0)
    return -(logp.exp() * logp).sum(dim=-1)


def entropy_from_logits(logits: Tensor, mask: Tensor) -> Tensor:
    """Masked mean of the per-token entropy of softmax(logits). logits: [B, T, V]; mask: [B, T]. Returns []."""
    return masked_mean(entropy_of_logits(logits), mask)


def kl_to_reference(logp: Tensor, ref_logp: Tensor, mask: Tensor) -> Tensor:
    """Masked mean of the k3 estimator of KL(pi_theta || pi_ref) (Schulman 2020, "Approximating KL
    divergence"): with r = pi_ref / pi_theta, k3 = r - 1 - log r, unbiased and >= 0 for samples from pi_theta.
    Here the tokens come from the behaviour policy, so it is an estimate near pi_theta only.

    logp: [B, T] (with gradient); ref_logp: [B, T] from the frozen reference; mask: [B, T]. Returns [].
    """
    log_ratio = ref_logp.detach() - logp  # [B, T]
    return masked_mean(torch.exp(log_ratio) - 1.0 - log_ratio, mask)


def imitation_loss(logp: Tensor, mask: Tensor) -> Tensor:
    """Negative log-likelihood of imitated tokens: -mean_valid log pi_theta (the off-policy term for traces the
    search assembled, ``train.journey``).

    Why not the importance-weighted surrogate: a trace written from a tree was never sampled as written (its
    back lines and summary were not sampled at all), so pi_behav has no value to weight by, and decoupled PPO
    with pi_behav := 1 would scale each token by pi_prox, vanishing exactly on the unlikely tokens the trace
    should teach. A verified trace is a sample of the reward-filtered search distribution; maximising its
    likelihood is the M-step of expert iteration / reward-weighted regression (Anthony et al. 2017; Peters &
    Schaal 2007), the loss Stream of Search trains with.

    logp: [B, T] (with gradient); mask: [B, T] the imitated tokens. Returns [] (0 when none is valid).
    """
    return -masked_mean(logp, mask)


def visit_distillation_loss(step_logp: Tensor, group: Tensor, share: Tensor) -> Tensor:
    """Cross-entropy from the search's visit distribution over sibling steps to the policy's (AlphaZero's
    policy target, Silver et al. 2017): with q_i = exp(l_i) / sum_{j ~ i} exp(l_j) over the siblings j of step
    i present in the batch and p_i = share_i / sum_{j ~ i} share_j,

        loss = mean over sibling groups of  -sum_i p_i log q_i.

    step_logp: [S] log pi_theta of each whole step (with gradient); group: [S] long, the sibling group of each
    step (-1: not part of one); share: [S] visits of the step over its siblings'. Groups with a single member
    are left out (q = 1, nothing to learn). Returns [] (0 when no group has two members).
    """
    valid = group >= 0
    if not bool(valid.any()):
        return step_logp.new_tensor(0.0)
    x, g, p = step_logp[valid], group[valid], share[valid].to(step_logp.dtype).detach()
    _, g = torch.unique(g, return_inverse=True)  # dense group ids 0..G-1
    n = int(g.max()) + 1
    size = torch.zeros(n, dtype=x.dtype, device=x.device).index_add_(0, g, torch.ones_like(x))
    top = torch.full((n,), -math.inf, dtype=x.dtype, device=x.device).scatter_reduce(0, g, x.detach(), "amax")
    lse = torch.zeros(n, dtype=x.dtype, device=x.device).index_add_(0, g, torch.exp(x - top[g])).log() + top
    p = p / torch.zeros(n, dtype=x.dtype, device=x.device).index_add_(0, g, p).clamp(min=1e-12)[g]
    per_group = torch.zeros(n, dtype=x.dtype, device=x.device).index_add_(0, g, -p * (x - lse[g]))
    keep = size >= 2
    return per_group[keep].mean() if bool(keep.any()) else step_logp.new_tensor(0.0)


@dataclass(frozen=True)
class LossCoefficients:
    clip_eps: float = 0.2  # PPO clip range around the proximal policy
    is_cap: float = 5.0  # cap on the behaviour weight pi_prox / pi_behav
    is_mode: ISMode = "cap"  # "cap": truncate weights at is_cap; "mask": drop tokens above it
    value_coef: float = 0.5  # weight of the value loss
    value_clip: float | None = None  # PPO2 value clip around the old values; None: no clipping
    entropy_coef: float = 0.0  # weight of the entropy bonus (subtracted from the loss)
    kl_coef: float = 0.0  # weight of the k3 KL to the frozen reference
    policy_coef: float = 1.0  # weight of the policy-gradient term (0: the value, imitation and regularisers only)


@dataclass
class LossInputs:
    logp: Tensor  # [B, T] log pi_theta of the action tokens (with gradient)
    prox_logp: Tensor  # [B, T] log pi_prox, the policy the update is anchored to
    behav_logp: Tensor  # [B, T] log pi_behav, the policy that sampled the tokens
    advantages: Tensor  # [B, T] per-token advantages (the step's advantage, or V-trace's pg_advantages)
    mask: Tensor  # [B, T] valid action tokens
    values: Tensor  # [B, T] value head predictions (with gradient)
    value_targets: Tensor  # [B, T] value targets
    value_mask: Tensor  # [B, T] positions where the value head is trained (e.g. each step's last token)
    old_values: Tensor | None = None  # [B, T] value predictions before the update, for value_clip
    logits: Tensor | None = None  # [B, T, V] policy logits, for the entropy term
    entropy: Tensor | None = None  # [B, T] per-token entropy (instead of logits, where only the mask's are computed)
    ref_logp: Tensor | None = None  # [B, T] frozen reference log-probs, for the KL term


@dataclass
class LossOutput:
    loss: Tensor  # [] the scalar to backpropagate
    policy: PolicyLossOutput
    value: ValueLossOutput
    entropy: Tensor  # [] mean token entropy (0 when no logits are given)
    kl: Tensor  # [] mean k3 KL to the reference (0 when no reference is given)


def combine(
    policy: PolicyLossOutput, value: ValueLossOutput, entropy: Tensor, kl: Tensor, coefs: LossCoefficients
) -> LossOutput:
    """The one total: policy_coef * policy + value_coef * value - entropy_coef * entropy + kl_coef * kl."""
    loss = (
        coefs.policy_coef * policy.loss
        + coefs.value_coef * value.loss
        - coefs.entropy_coef * entropy
        + coefs.kl_coef * kl
    )
    return LossOutput(loss=loss, policy=policy, value=value, entropy=entropy, kl=kl)


def regularisers(inputs: LossInputs, coefs: LossCoefficients) -> tuple[Tensor, Tensor]:
    """(entropy, kl) of ``inputs``; each 0 where its input is absent, an error where its coefficient needs it."""
    if coefs.entropy_coef and inputs.logits is None and inputs.entropy is None:
        raise ValueError("entropy_coef is set but neither logits nor per-token entropy were given")
    if coefs.kl_coef and inputs.ref_logp is None:
        raise ValueError("kl_coef is set but no reference log-probs were given")
    zero = inputs.logp.new_tensor(0.0)
    entropy = zero
    if inputs.entropy is not None:
        entropy = masked_mean(inputs.entropy, inputs.mask)
    elif inputs.logits is not None:
        entropy = entropy_from_logits(inputs.logits, inputs.mask)
    kl = kl_to_reference(inputs.logp, inputs.ref_logp, inputs.mask) if inputs.ref_logp is not None else zero
    return entropy, kl


def total_loss(inputs: LossInputs, coefs: LossCoefficients) -> LossOutput:
    """policy_coef * policy + value_coef * value - entropy_coef * entropy + kl_coef * kl (decoupled PPO policy)."""
    policy = decoupled_ppo_loss(
        inputs.logp,
        inputs.prox_logp,
        inputs.behav_logp,
        inputs.advantages,
        inputs.mask,
        coefs.clip_eps,
        coefs.is_cap,
        coefs.is_mode,
    )
    value = value_loss(inputs.values, inputs.value_targets, inputs.value_mask, coefs.value_clip, inputs.old_values)
    return combine(policy, value, *regularisers(inputs, coefs), coefs)


def vtrace_step_loss(
    step_logp: Tensor, step_behav: Tensor, rewards: Tensor, v_state: Tensor, v_next: Tensor
) -> tuple[PolicyLossOutput, ValueLossOutput]:
    """One-step V-trace per step sample, the value head as critic (IMPALA's loss with a trajectory of one step).

    step_logp: [S] log pi_theta of each whole step (its tokens' sum, with gradient); step_behav: [S] the same
    under the behaviour policy. rewards: [S]. v_state: [S] V(state) (with gradient); v_next: [S] V(state after
    the step), 0 where the step is terminal. Policy loss -mean(pg_advantage x step_logp); value loss
    0.5 x mean((V(state) - v_s)^2).
    """
    ones = torch.ones_like(step_behav[:, None], dtype=torch.bool)
    vt = vtrace(
        step_behav[:, None],
        step_logp.detach()[:, None],
        rewards[:, None],
        v_state.detach()[:, None],
        v_next.detach(),
        ones,
        discount=1.0,
    )
    rhos = vt.rhos[:, 0]
    policy = PolicyLossOutput(
        loss=-(vt.pg_advantages[:, 0] * step_logp).mean(),
        clip_fraction=rhos.new_tensor(0.0),
        is_weight_mean=rhos.mean(),
        is_weight_max=rhos.max(),
        ess=effective_sample_size(rhos, ones[:, 0]),
        masked_fraction=rhos.new_tensor(0.0),
    )
    value = ValueLossOutput(loss=0.5 * ((v_state - vt.vs[:, 0]) ** 2).mean(), clip_fraction=rhos.new_tensor(0.0))
    return policy, value
