"""The learner's loss math on tiny tensors: hand-derived numbers, equivalences, and a V-trace reference loop."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from arbor.learner.losses import (
    LossCoefficients,
    LossInputs,
    decoupled_ppo_loss,
    effective_sample_size,
    entropy_from_logits,
    imitation_loss,
    kl_to_reference,
    masked_mean,
    ppo_loss,
    total_loss,
    value_loss,
    visit_distillation_loss,
    vtrace,
)

LOG = math.log


def _t(rows: list[list[float]]) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float64)


def _weighted_case() -> dict[str, torch.Tensor]:
    """Three valid tokens and one padded token full of garbage; eps = 0.2.

    token 0: r = pi/prox = 1.5, A = +1 -> min(1.5, 1.2) = 1.2 (clip binds); w = prox/behav = 2
    token 1: r = 0.5,           A = +1 -> min(0.5, 0.8) = 0.5;              w = 1
    token 2: r = 0.5,           A = -2 -> min(-1.0, -1.6) = -1.6 (clip binds); w = 4
    """
    prox = _t([[LOG(0.4), LOG(0.2), LOG(0.3), 0.0]])
    return {
        "logp": (prox + _t([[LOG(1.5), LOG(0.5), LOG(0.5), 3.0]])).requires_grad_(),
        "prox_logp": prox,
        "behav_logp": prox - _t([[LOG(2.0), LOG(1.0), LOG(4.0), -20.0]]),
        "advantages": _t([[1.0, 1.0, -2.0, 100.0]]),
        "mask": torch.tensor([[True, True, True, False]]),
    }


def test_decoupled_ppo_cap_by_hand() -> None:
    out = decoupled_ppo_loss(**_weighted_case(), clip_eps=0.2, is_cap=3.0, is_mode="cap")
    # applied w = [2, 1, min(4, 3) = 3]: 2*1.2 + 1*0.5 + 3*(-1.6) = 2.4 + 0.5 - 4.8 = -1.9; loss = 1.9 / 3
    assert out.loss.item() == pytest.approx(1.9 / 3)
    assert out.clip_fraction.item() == pytest.approx(2 / 3)  # tokens 0 and 2
    assert out.is_weight_mean.item() == pytest.approx(7 / 3)  # raw (2 + 1 + 4) / 3; the pad's e^20 is ignored
    assert out.is_weight_max.item() == pytest.approx(4.0)
    # ESS of [2, 1, 3]: (2+1+3)^2 / (3 * (4+1+9)) = 36 / 42
    assert out.ess.item() == pytest.approx(6 / 7)
    assert out.masked_fraction.item() == pytest.approx(1 / 3)  # token 2 is over the cap


def test_decoupled_ppo_mask_drops_the_heavy_token() -> None:
    out = decoupled_ppo_loss(**_weighted_case(), clip_eps=0.2, is_cap=3.0, is_mode="mask")
    # applied w = [2, 1, 0]: 2.4 + 0.5 + 0 = 2.9; the dropped token stays in the denominator (AReaL)
    assert out.loss.item() == pytest.approx(-2.9 / 3)
    # ESS of [2, 1, 0]: 3^2 / (3 * 5) = 0.6
    assert out.ess.item() == pytest.approx(0.6)
    assert out.masked_fraction.item() == pytest.approx(1 / 3)
    assert out.is_weight_max.item() == pytest.approx(4.0)  # raw stats are the same under either mode


def test_mask_mode_gives_the_dropped_token_no_gradient() -> None:
    case = _weighted_case()
    decoupled_ppo_loss(**case, clip_eps=0.2, is_cap=3.0, is_mode="mask").loss.backward()
    grad = case["logp"].grad
    # token 1 is unclipped: d/dlogp of -(w r A)/3 = -(1 * 0.5 * 1)/3; tokens 0 and 2 clip, token 2 is dropped too
    assert grad[0, 1].item() == pytest.approx(-0.5 / 3)
    assert grad[0, 0].item() == 0.0 and grad[0, 2].item() == 0.0 and grad[0, 3].item() == 0.0


def test_gradients_flow_only_through_logp() -> None:
    case = _weighted_case()
    for key in ("prox_logp", "behav_logp", "advantages"):
        case[key] = case[key].clone().requires_grad_()
    decoupled_ppo_loss(**case, clip_eps=0.2, is_cap=3.0, is_mode="cap").loss.backward()
    assert case["logp"].grad is not None and case["logp"].grad.abs().sum() > 0
    for key in ("prox_logp", "behav_logp", "advantages"):
        assert case[key].grad is None


def _random_policy_batch(seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    shape = (4, 6)
    mask = torch.rand(shape, generator=g) > 0.25
    return {
        "logp": (-torch.rand(shape, generator=g) * 3).double(),
        "prox_logp": (-torch.rand(shape, generator=g) * 3).double(),
        "advantages": torch.randn(shape, generator=g).double(),
        "mask": mask,
    }


def test_decoupled_equals_plain_ppo_when_behav_is_prox() -> None:
    b = _random_policy_batch(0)
    logp_a = b["logp"].clone().requires_grad_()
    logp_b = b["logp"].clone().requires_grad_()
    dec = decoupled_ppo_loss(
        logp_a, b["prox_logp"], b["prox_logp"], b["advantages"], b["mask"], clip_eps=0.2, is_cap=2.0
    )
    plain = ppo_loss(logp_b, b["prox_logp"], b["advantages"], b["mask"], clip_eps=0.2)
    assert dec.loss.item() == pytest.approx(plain.loss.item(), abs=1e-12)
    assert dec.clip_fraction.item() == pytest.approx(plain.clip_fraction.item())
    assert plain.clip_fraction.item() > 0  # the random ratios do reach the clip
    dec.loss.backward()
    plain.loss.backward()
    torch.testing.assert_close(logp_a.grad, logp_b.grad)
    assert dec.ess.item() == pytest.approx(1.0) and dec.masked_fraction.item() == 0.0


@pytest.mark.parametrize("is_mode", ["cap", "mask"])
def test_decoupled_equals_plain_ppo_when_all_policies_coincide(is_mode: str) -> None:
    b = _random_policy_batch(1)
    logp = b["logp"].clone().requires_grad_()
    same = b["logp"].clone()
    dec = decoupled_ppo_loss(logp, same, same, b["advantages"], b["mask"], clip_eps=0.2, is_cap=1.5, is_mode=is_mode)
    plain = ppo_loss(b["logp"], same, b["advantages"], b["mask"], clip_eps=0.2)
    # r = w = 1 everywhere: loss = -mean(A) over valid tokens, nothing clipped
    assert dec.loss.item() == pytest.approx(plain.loss.item(), abs=1e-12)
    assert dec.loss.item() == pytest.approx(-masked_mean(b["advantages"], b["mask"]).item())
    assert dec.clip_fraction.item() == 0.0 and dec.is_weight_max.item() == pytest.approx(1.0)


def test_plain_ppo_by_hand() -> None:
    # r = [1.5, 0.5], A = [+1, -1], eps = 0.2: min(1.5, 1.2) = 1.2; min(-0.5, -0.8) = -0.8; loss = -(1.2 - 0.8)/2
    out = ppo_loss(_t([[LOG(1.5), LOG(0.5)]]), _t([[0.0, 0.0]]), _t([[1.0, -1.0]]), torch.ones(1, 2), clip_eps=0.2)
    assert out.loss.item() == pytest.approx(-0.2)
    assert out.clip_fraction.item() == pytest.approx(1.0)


def test_effective_sample_size() -> None:
    mask = torch.ones(5, dtype=torch.bool)
    assert effective_sample_size(torch.full((5,), 0.7), mask).item() == pytest.approx(1.0)
    assert effective_sample_size(torch.tensor([0.0, 0.0, 3.0, 0.0, 0.0]), mask).item() == pytest.approx(1 / 5)
    # a padded position does not count in n: [1, 1] valid -> 1
    assert effective_sample_size(torch.tensor([1.0, 1.0, 9.0]), torch.tensor([1, 1, 0])).item() == pytest.approx(1.0)
    assert effective_sample_size(torch.zeros(3), torch.ones(3)).item() == 0.0


def test_nan_at_a_valid_token_propagates_and_padding_does_not() -> None:
    case = _weighted_case()
    case["advantages"][0, 3] = float("nan")  # padded: ignored
    assert torch.isfinite(decoupled_ppo_loss(**case, clip_eps=0.2, is_cap=3.0).loss)
    case["advantages"][0, 1] = float("nan")  # valid: the guard must see it
    assert torch.isnan(decoupled_ppo_loss(**case, clip_eps=0.2, is_cap=3.0).loss)


def test_value_loss_by_hand() -> None:
    values, targets, mask = _t([[0.5, 0.0, 9.0]]), _t([[1.0, 1.0, 0.0]]), torch.tensor([[1, 1, 0]])
    # unclipped: 0.5 * ((0.5-1)^2 + (0-1)^2) / 2 = 0.5 * 1.25 / 2 = 0.3125
    assert value_loss(values, targets, mask).loss.item() == pytest.approx(0.3125)
    # clip 0.2 around old = [0, 0.2]: clipped V = [0 + 0.2, 0.2 - 0.2] = [0.2, 0.0]
    # token 0: max(0.25, (0.2-1)^2 = 0.64) = 0.64; token 1: max(1, 1) = 1; loss = 0.5 * 1.64 / 2 = 0.41
    out = value_loss(values, targets, mask, clip=0.2, old_values=_t([[0.0, 0.2, 0.0]]))
    assert out.loss.item() == pytest.approx(0.41)
    assert out.clip_fraction.item() == pytest.approx(0.5)
    with pytest.raises(ValueError, match="old_values"):
        value_loss(values, targets, mask, clip=0.2)


def test_entropy_by_hand() -> None:
    ninf = -math.inf
    # uniform over 2 -> ln 2; uniform over the 2 allowed of 3 -> ln 2; uniform over 3 -> ln 3 (padded)
    logits = _t([[0.0, 0.0, ninf], [5.0, ninf, 5.0], [0.0, 0.0, 0.0]]).unsqueeze(0).requires_grad_()
    ent = entropy_from_logits(logits, torch.tensor([[1, 1, 0]]))
    assert ent.item() == pytest.approx(math.log(2))
    ent.backward()
    assert torch.isfinite(logits.grad).all()
    assert entropy_from_logits(logits.detach(), torch.ones(1, 3)).item() == pytest.approx((2 * LOG(2) + LOG(3)) / 3)


def test_kl_k3_by_hand() -> None:
    # token 0: r = 0.25 / 0.5 = 0.5, k3 = 0.5 - 1 - ln 0.5 = 0.193147; token 1: r = 1, k3 = 0; mean over 2
    logp = _t([[LOG(0.5), LOG(0.3), 7.0]]).requires_grad_()
    kl = kl_to_reference(logp, _t([[LOG(0.25), LOG(0.3), 0.0]]), torch.tensor([[1, 1, 0]]))
    assert kl.item() == pytest.approx((0.5 - 1 - LOG(0.5)) / 2)
    kl.backward()
    # d k3 / d logp = -r + 1 = 0.5 on token 0, divided by 2 valid tokens
    assert logp.grad[0, 0].item() == pytest.approx(0.25)


def test_total_loss_composes_the_terms() -> None:
    case = _weighted_case()
    mask = case["mask"]
    values = _t([[0.5, 0.0, 0.3, 0.0]]).requires_grad_()
    logits = torch.zeros(1, 4, 3, dtype=torch.float64)  # entropy ln 3 on every token
    ref_logp = case["prox_logp"]
    coefs = LossCoefficients(clip_eps=0.2, is_cap=3.0, value_coef=0.5, entropy_coef=0.01, kl_coef=0.1)
    inputs = LossInputs(
        logp=case["logp"],
        prox_logp=case["prox_logp"],
        behav_logp=case["behav_logp"],
        advantages=case["advantages"],
        mask=mask,
        values=values,
        value_targets=_t([[1.0, 1.0, 1.0, 0.0]]),
        value_mask=mask,
        logits=logits,
        ref_logp=ref_logp,
    )
    out = total_loss(inputs, coefs)
    # value: 0.5 * (0.25 + 1 + 0.49) / 3 = 0.29; kl over r = [1/1.5, 2, 2]: k3 = r - 1 - ln r
    kl = sum(r - 1 - LOG(r) for r in (1 / 1.5, 2.0, 2.0)) / 3
    expected = 1.9 / 3 + 0.5 * 0.29 - 0.01 * LOG(3) + 0.1 * kl
    assert out.loss.item() == pytest.approx(expected)
    assert out.kl.item() == pytest.approx(kl) and out.entropy.item() == pytest.approx(LOG(3))
    out.loss.backward()
    assert values.grad is not None and case["logp"].grad is not None
    with pytest.raises(ValueError, match="logits"):
        total_loss(LossInputs(**{**inputs.__dict__, "logits": None}), coefs)
    # policy_coef weights the policy term alone: at 0 the policy's tokens get only the regularisers' gradient
    inputs.logp.grad = None
    half = total_loss(inputs, dataclasses.replace(coefs, policy_coef=0.5))
    assert half.loss.item() == pytest.approx(expected - 0.5 * 1.9 / 3)
    assert half.policy.loss.item() == pytest.approx(1.9 / 3)  # reported unweighted
    bare = dataclasses.replace(coefs, policy_coef=0.0, entropy_coef=0.0, kl_coef=0.0)
    total_loss(inputs, bare).loss.backward()
    assert inputs.logp.grad is not None and float(inputs.logp.grad.abs().sum()) == 0.0


def test_vtrace_by_hand() -> None:
    # gamma 0.9, V = [0.5, 0.2], bootstrap 1.0, r = [0, 1], pi/mu = [2, 0.5], rho_bar = c_bar = 1 -> rho = c = [1, 0.5]
    # delta_1 = 0.5 * (1 + 0.9*1.0 - 0.2) = 0.85; v_1 = 0.2 + 0.85 = 1.05
    # delta_0 = 1 * (0 + 0.9*0.2 - 0.5) = -0.32; v_0 = 0.5 - 0.32 + 0.9*1*0.85 = 0.945
    # pg_0 = 1 * (0 + 0.9*1.05 - 0.5) = 0.445; pg_1 = 0.5 * (1 + 0.9*1.0 - 0.2) = 0.85
    out = vtrace(
        behav_logp=_t([[0.0, 0.0, 0.0]]),
        target_logp=_t([[LOG(2.0), LOG(0.5), 4.0]]),
        rewards=_t([[0.0, 1.0, 5.0]]),
        values=_t([[0.5, 0.2, 3.0]]),
        bootstrap_value=_t([1.0]),
        mask=torch.tensor([[1, 1, 0]]),
        discount=0.9,
    )
    torch.testing.assert_close(out.vs, _t([[0.945, 1.05, 0.0]]))
    torch.testing.assert_close(out.pg_advantages, _t([[0.445, 0.85, 0.0]]))
    torch.testing.assert_close(out.rhos, _t([[1.0, 0.5, 0.0]]))


def _vtrace_reference(behav, target, rewards, values, bootstrap, lengths, gamma, rho_bar, c_bar):
    """IMPALA's eq. 1 as written: v_s = V(x_s) + sum_{t>=s} gamma^{t-s} (prod_{s<=i<t} c_i) delta_t, scalar loops."""
    batch, horizon = values.shape
    vs = torch.zeros(batch, horizon, dtype=torch.float64)
    pg = torch.zeros(batch, horizon, dtype=torch.float64)
    for b in range(batch):
        n = int(lengths[b])
        ratio = [math.exp(float(target[b, t] - behav[b, t])) for t in range(n)]
        rho = [min(rho_bar, x) for x in ratio]
        c = [min(c_bar, x) for x in ratio]
        v = [float(values[b, t]) for t in range(n)] + [float(bootstrap[b])]
        delta = [rho[t] * (float(rewards[b, t]) + gamma * v[t + 1] - v[t]) for t in range(n)]
        vs_row = []
        for s in range(n):
            total, trace = 0.0, 1.0
            for t in range(s, n):
                total += gamma ** (t - s) * trace * delta[t]
                trace *= c[t]
            vs_row.append(v[s] + total)
        vs_row.append(v[n])
        for s in range(n):
            vs[b, s] = vs_row[s]
            pg[b, s] = rho[s] * (float(rewards[b, s]) + gamma * vs_row[s + 1] - v[s])
    return vs, pg


@pytest.mark.parametrize(("rho_bar", "c_bar"), [(1.0, 1.0), (2.0, 0.7), (math.inf, math.inf)])
def test_vtrace_matches_reference_loop(rho_bar: float, c_bar: float) -> None:
    g = torch.Generator().manual_seed(7)
    batch, horizon, gamma = 5, 7, 0.95
    lengths = torch.tensor([7, 3, 1, 5, 6])
    mask = torch.arange(horizon)[None, :] < lengths[:, None]
    behav = -torch.rand(batch, horizon, generator=g, dtype=torch.float64) * 2
    target = -torch.rand(batch, horizon, generator=g, dtype=torch.float64) * 2
    rewards = torch.randn(batch, horizon, generator=g, dtype=torch.float64)
    values = torch.randn(batch, horizon, generator=g, dtype=torch.float64)
    bootstrap = torch.randn(batch, generator=g, dtype=torch.float64)
    out = vtrace(behav, target, rewards, values, bootstrap, mask, gamma, rho_bar, c_bar)
    ref_vs, ref_pg = _vtrace_reference(behav, target, rewards, values, bootstrap, lengths, gamma, rho_bar, c_bar)
    torch.testing.assert_close(out.vs, ref_vs)
    torch.testing.assert_close(out.pg_advantages, ref_pg)


def test_vtrace_on_policy_is_the_discounted_return() -> None:
    # on-policy, no truncation: v_s = sum_{t>=s} gamma^{t-s} r_t + gamma^{n-s} bootstrap (the lambda = 1 return)
    g = torch.Generator().manual_seed(3)
    logp = -torch.rand(2, 4, generator=g, dtype=torch.float64)
    rewards = torch.randn(2, 4, generator=g, dtype=torch.float64)
    values = torch.randn(2, 4, generator=g, dtype=torch.float64)
    bootstrap = _t([[0.7, -0.4]])[0]
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]])
    out = vtrace(logp, logp, rewards, values, bootstrap, mask, 0.9, math.inf, math.inf)
    for b, n in ((0, 4), (1, 2)):
        for s in range(n):
            ret = sum(0.9 ** (t - s) * rewards[b, t].item() for t in range(s, n)) + 0.9 ** (n - s) * bootstrap[b].item()
            assert out.vs[b, s].item() == pytest.approx(ret)
            # the pg advantage is the one-step TD of the return: r_s + gamma v_{s+1} - V(x_s) = v_s - V(x_s)
            assert out.pg_advantages[b, s].item() == pytest.approx(ret - values[b, s].item())


def test_vtrace_per_step_discount_and_bad_mask() -> None:
    # a [B, T] discount with 0 after a terminal step cuts the bootstrap: v = r for a one-step terminal row
    out = vtrace(_t([[0.0]]), _t([[0.0]]), _t([[1.0]]), _t([[0.3]]), _t([[5.0]])[0], torch.ones(1, 1), _t([[0.0]]))
    assert out.vs.item() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="prefix"):
        vtrace(*(_t([[0.0, 0.0]]),) * 4, _t([[0.0]])[0], torch.tensor([[0, 1]]), 0.9)


def test_vtrace_step_loss_by_hand() -> None:
    """On-policy (rho = 1): pg advantage r + V(next) - V(state), value target r + V(next), by hand."""
    from arbor.learner.losses import vtrace_step_loss

    logp = torch.tensor([-1.0, -2.0], requires_grad=True)
    v_state = torch.tensor([0.5, 0.2], requires_grad=True)
    policy, value = vtrace_step_loss(logp, logp.detach(), _t([1.0, 0.0]), v_state, _t([0.0, 0.6]))
    # pg advantages 0.5 and 0.4: loss = -(0.5 * -1 + 0.4 * -2) / 2
    assert float(policy.loss) == pytest.approx(0.65)
    assert float(value.loss) == pytest.approx(0.5 * ((0.5 - 1.0) ** 2 + (0.2 - 0.6) ** 2) / 2)
    assert float(policy.is_weight_mean) == pytest.approx(1.0) and float(policy.ess) == pytest.approx(1.0)
    (policy.loss + value.loss).backward()
    assert logp.grad.tolist() == pytest.approx([-0.25, -0.2])  # -pg / 2: the advantages carry no gradient
    # off-policy: a step the behaviour policy found twice as likely gets rho = 1/2
    policy, _ = vtrace_step_loss(_t([-1.0]), _t([-1.0 + math.log(2.0)]), _t([1.0]), _t([0.0]), _t([0.0]))
    assert float(policy.is_weight_mean) == pytest.approx(0.5) and float(policy.loss) == pytest.approx(0.5 * 1.0)


def test_imitation_loss_is_the_mean_negative_log_likelihood_of_the_masked_tokens():
    logp = torch.tensor([[-1.0, -2.0, -9.0], [-0.5, -7.0, -7.0]], requires_grad=True)
    mask = torch.tensor([[True, True, False], [True, False, False]])
    loss = imitation_loss(logp, mask)
    assert loss.item() == pytest.approx((1.0 + 2.0 + 0.5) / 3)
    loss.backward()
    assert torch.allclose(logp.grad, -mask.float() / 3)  # pushes each imitated token's log-prob up, equally
    assert imitation_loss(logp, torch.zeros_like(mask)).item() == 0.0


def test_visit_distillation_is_the_cross_entropy_to_visit_shares_over_siblings():
    # group 0: pi over two siblings 0.5 and 0.25 -> q = (2/3, 1/3); visits 1 and 3 -> p = (1/4, 3/4)
    # group 1: a single step (left out); -1: a step without a visit share (left out)
    logp = torch.tensor([math.log(0.5), math.log(0.25), -3.0, -1.0], requires_grad=True)
    group = torch.tensor([0, 0, 1, -1])
    share = torch.tensor([0.25, 0.75, 1.0, 0.0])
    loss = visit_distillation_loss(logp, group, share)
    expected = -(0.25 * math.log(2 / 3) + 0.75 * math.log(1 / 3))
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    loss.backward()
    # d/dl_i of -sum p log softmax(l) = q_i - p_i: the less-visited sibling goes down, the more-visited up
    assert logp.grad.tolist() == pytest.approx([2 / 3 - 0.25, 1 / 3 - 0.75, 0.0, 0.0], abs=1e-6)
    # shares need not sum to 1 over the siblings present: they are renormalised (here 2:6 = 1:3 again)
    again = visit_distillation_loss(logp.detach(), group, torch.tensor([2.0, 6.0, 5.0, 0.0]))
    assert again.item() == pytest.approx(expected, rel=1e-6)
    assert visit_distillation_loss(logp.detach(), torch.tensor([-1, -1, 1, 2]), share).item() == 0.0
