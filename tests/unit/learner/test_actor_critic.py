"""The learner's update on step samples: packing, log-prob alignment, the non-finite guard, exact resume."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from arbor.core.config import ModelConfig, TrainConfig
from arbor.core.model import ValueHead, build_policy, hidden_size_of
from arbor.core.samples import StepSample
from arbor.learner.actor_critic import ActorCriticLearner, collate_steps, token_logprobs

TINY = ModelConfig(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64, max_seq_len=64)


def _samples(tokenizer, model, n: int = 6, version: int = 0) -> list[StepSample]:
    """Step samples whose behaviour log-probs are the model's own (so pi_behav = pi_theta)."""
    out = []
    for i in range(n):
        state = tokenizer.encode(f"Use 1 2 {i} to make 3.\n", add_special_tokens=False)
        action = tokenizer.encode(f"{i}+1={i + 1}\n", add_special_tokens=False)
        ids = torch.tensor([state + action])
        with torch.no_grad():
            logits = model(input_ids=ids).logits
        lp = token_logprobs(logits, ids, 1.0)[0, len(state) - 1 :].tolist()
        out.append(StepSample(state, action, lp, version, advantage=(-1) ** i * 0.5, value_target=1.0, state_value=0.5))
    return out


def test_collate_aligns_actions_values_and_behaviour_logprobs():
    model, tok = build_policy(TINY)
    samples = _samples(tok, model, 3)
    batch = collate_steps(samples, tok.pad_token_id, 64, current_version=2)
    with torch.no_grad():
        logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
    lp = token_logprobs(logits, batch.input_ids, 1.0)
    assert torch.allclose(lp[batch.action_mask], batch.behav_logp[batch.action_mask], atol=1e-5)
    for i, s in enumerate(samples):
        assert int(batch.action_mask[i].sum()) == len(s.action_tokens)
        ends = batch.value_mask[i].nonzero().flatten().tolist()
        assert ends == [len(s.state_tokens) - 1, len(s.state_tokens) + len(s.action_tokens) - 1]
        assert batch.value_targets[i, ends].tolist() == [s.state_value, s.value_target]
        assert set(batch.advantages[i][batch.action_mask[i]].tolist()) == {s.advantage}
    assert batch.lags == [2, 2, 2]


def test_collate_cuts_long_states_from_the_left_and_rejects_oversized_actions():
    s = StepSample(list(range(1, 60)), [5, 6, 7], [-1.0] * 3, 0, 0.1, 1.0, 0.9)
    batch = collate_steps([s], 0, 32, 0)
    assert batch.input_ids.shape == (1, 32) and batch.input_ids[0, -3:].tolist() == [5, 6, 7]
    assert collate_steps([s], 0, 4, 0).input_ids.shape == (1, 4)  # one state token is enough
    with pytest.raises(ValueError, match="max_seq_len=3"):
        collate_steps([s], 0, 3, 0)


def _learner(model, tok, reference=None, **kw):
    cfg = TrainConfig(engine="torch", lr=1e-2, warmup_steps=0, steps=10, **kw)
    return ActorCriticLearner(
        model,
        ValueHead(hidden_size_of(model)),
        cfg,
        pad_id=tok.pad_token_id,
        max_len=64,
        temperature=1.0,
        rank_batch_size=6,
        reference=reference,
    )


def test_update_moves_logprobs_with_the_advantage_sign():
    torch.manual_seed(0)
    model, tok = build_policy(TINY)
    samples = _samples(tok, model)
    learner = _learner(model, tok)
    m = learner.update(samples, 0)
    assert m["learner/step_skipped"] == 0.0
    assert m["learner/is_weight_mean"] == pytest.approx(1.0, abs=1e-4)  # behaviour == current policy
    assert m["learner/ess"] == pytest.approx(1.0, abs=1e-4)
    batch = collate_steps(samples, tok.pad_token_id, 64, 0)
    with torch.no_grad():
        lp = token_logprobs(
            model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits, batch.input_ids, 1.0
        )
    delta = ((lp - batch.behav_logp) * batch.action_mask).sum(-1)
    for s, d in zip(samples, delta.tolist()):
        assert (d > 0) == (s.advantage > 0)


@pytest.mark.parametrize("policy_loss", ["decoupled_ppo", "ppo", "vtrace"])
def test_nonfinite_loss_skips_the_step_and_keeps_weights(policy_loss):
    model, tok = build_policy(TINY)
    samples = _samples(tok, model, 4)
    learner = _learner(model, tok, policy_loss=policy_loss)
    bad = [
        StepSample(s.state_tokens, s.action_tokens, [math.nan] * len(s.action_tokens), 0, s.advantage, 1.0, 0.5)
        for s in samples
    ]
    before = {k: v.clone() for k, v in learner.net.state_dict().items()}
    m = learner.update(bad, 0)
    assert m["learner/step_skipped"] == 1.0 and m["learner/skipped_nonfinite"] == 1.0
    assert all(torch.equal(before[k], v) for k, v in learner.net.state_dict().items())
    m = learner.update(samples, 0)  # a finite batch still trains afterwards
    assert m["learner/step_skipped"] == 0.0 and learner.steps == 1


@pytest.mark.parametrize("zero_stage", [0, 1, 2])
def test_learner_rank_checkpoint_resumes_exactly(tmp_path, zero_stage):
    """Save after two steps, then step three both ways: same loss, same weights (optimizer, scheduler, RNG).
    Under ZeRO 1-2 the optimizer state is DeepSpeed's partitioned one, loaded with weights_only=True."""
    from arbor.core.channels import InProcessWeights
    from arbor.core.config import load_config
    from arbor.core.model import save_checkpoint
    from arbor.learner.rank import LearnerRank
    from tests.conftest import DEFAULT_CONFIG

    model, tok = build_policy(TINY)
    init = tmp_path / "init"
    save_checkpoint(init, model, tok, ValueHead(hidden_size_of(model)))
    cfg = load_config(
        DEFAULT_CONFIG,
        [
            "train.batch_size=6",
            "train.warmup_steps=1",
            "train.lr=1e-2",
            "train.sync_every=100",
            f"train.zero_stage={zero_stage}",
        ],
    )
    samples = _samples(tok, model)

    def fresh(path):
        rank = LearnerRank(cfg, 0, 1, str(path), InProcessWeights())
        rank.setup()
        return rank

    a = fresh(init)
    a.step(samples, publish=False)
    a.step(samples, publish=False)
    a.version = 2
    a.save(str(tmp_path / "ckpt"), meta={})
    third = a.step(samples, publish=False)
    b = fresh(tmp_path / "ckpt")
    assert b.load(str(tmp_path / "ckpt")) == 2
    again = b.step(samples, publish=False)
    assert again.metrics["learner/loss"] == pytest.approx(third.metrics["learner/loss"], rel=1e-6)
    assert b.weights_digest() == pytest.approx(a.weights_digest(), rel=1e-9)
    assert again.metrics["learner/lr"] == pytest.approx(third.metrics["learner/lr"])


def test_a_path_packs_into_one_row_with_the_same_logprobs():
    """The samples of one path (each a prefix of the next) share a row; per-sample sums match unpacked ones."""
    from arbor.learner.actor_critic import _per_sample_sums

    model, tok = build_policy(TINY)
    prompt = tok.encode("Use 1 2 3 to make 6.\n", add_special_tokens=False)
    steps = [tok.encode(t, add_special_tokens=False) for t in ("1+2=3\n", "3+3=6\n", "Answer: 6\n")]
    samples, state = [], list(prompt)
    for k, action in enumerate(steps):
        samples.append(StepSample(list(state), action, [-0.5] * len(action), 0, 0.1 * (k + 1), 1.0, 0.5))
        state += action
    twin = StepSample(prompt, steps[0], [-0.5] * len(steps[0]), 0, -0.3, 0.0, 0.5)  # same step, other tree
    packed = collate_steps([*samples, twin], tok.pad_token_id, 64, 0)
    assert packed.input_ids.shape[0] == 2  # the path, plus a row for the twin (positions already claimed)
    assert packed.sample_row.tolist() == [0, 0, 0, 1]
    with torch.no_grad():
        logits = model(input_ids=packed.input_ids, attention_mask=packed.attention_mask).logits
    lp = token_logprobs(logits, packed.input_ids, 1.0)
    sums, behav = _per_sample_sums(packed, torch.where(packed.action_mask, lp, torch.zeros_like(lp)))
    for i, s in enumerate([*samples, twin]):
        alone = collate_steps([s], tok.pad_token_id, 64, 0)
        with torch.no_grad():
            la = token_logprobs(model(input_ids=alone.input_ids).logits, alone.input_ids, 1.0)
        assert float(sums[i]) == pytest.approx(float(la[alone.action_mask].sum()), abs=1e-4)
        assert float(behav[i]) == pytest.approx(-0.5 * len(s.action_tokens))
    # each sample's advantage sits on its own action tokens only
    assert sorted(set(packed.advantages[0][packed.action_mask[0]].tolist())) == pytest.approx([0.1, 0.2, 0.3])


def test_half_precision_policy_with_float32_masters():
    """model.dtype=bfloat16: the policy and the search hold bf16 weights, the value head stays float32, the
    learner trains float32 master weights under autocast and publishes bf16 weights to the actors."""
    from arbor.actors.search import HFStepBackend, run_searches, training_scorers
    from arbor.core.channels import split_published
    from arbor.core.config import load_config
    from arbor.core.tasks import build_task
    from arbor.learner.advantages import tree_to_samples
    from arbor.learner.rank import build_learner
    from tests.conftest import DEFAULT_CONFIG, TINY
    from tests.search_toy import search_cfg

    overrides = ["model.dtype=bfloat16", "train.engine=torch", "train.entropy_coef=0.01", "train.warmup_steps=0"]
    cfg = load_config(DEFAULT_CONFIG, [*TINY, *overrides])  # the entropy term moves the LM whatever the outcomes
    model, tok = build_policy(cfg.model)
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    head = ValueHead(hidden_size_of(model))
    backend = HFStepBackend(model, tok, head, seed=0)
    search = search_cfg(kind="best_of_n", num_samples=4, max_step_tokens=8, max_response_tokens=24, max_depth=3)
    (tree,) = run_searches(backend, [build_task(cfg.task).train_problem(0)], search, training_scorers)
    assert all(isinstance(n.value_estimate, float) for n in tree.nodes[1:])
    samples = tree_to_samples(tree, value_head_weight=1.0)
    learner = build_learner(cfg, build_policy(cfg.model)[0], ValueHead(hidden_size_of(model)), tok.pad_token_id)
    assert {p.dtype for p in learner.net.parameters()} == {torch.float32}  # masters (its own copy, as a rank's)
    before = [p.detach().clone() for p in learner.model.parameters()]
    metrics = learner.update(samples, 0)
    assert metrics["learner/step_skipped"] == 0.0 and math.isfinite(metrics["learner/loss"])
    assert any(not torch.equal(a, b) for a, b in zip(before, learner.model.parameters()))
    state = learner.publish_state()
    lm = [v for k, v in state.items() if not k.startswith("value_head.") and v.is_floating_point()]
    assert {v.dtype for v in lm} == {torch.bfloat16} and state["value_head.proj.weight"].dtype == torch.float32
    backend.load_weights(1, *split_published(state))  # the actors' bf16 model takes them as they are
    assert {p.dtype for p in backend.model.parameters()} == {torch.bfloat16}


def test_the_head_on_action_positions_only_matches_the_full_logits():
    """target_logprobs (output head at the action targets alone) gives the full-logits log-probs, entropy and
    gradient: what the learner's memory saving must not change."""
    from arbor.learner.actor_critic import target_logprobs
    from arbor.learner.losses import entropy_from_logits, entropy_of_logits

    torch.manual_seed(0)
    model, tok = build_policy(TINY)
    batch = collate_steps(_samples(tok, model, 4), tok.pad_token_id, 64, 0)
    mask = batch.action_mask

    def grads(fn):
        model.zero_grad()
        fn().backward()
        return [p.grad.clone() for p in model.parameters() if p.grad is not None]

    def full():
        logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
        lp = token_logprobs(logits, batch.input_ids, 0.7)
        return (lp * mask).sum() + entropy_from_logits(logits[:, :-1].float() / 0.7, mask), lp

    def sparse():
        hidden = model.base_model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).last_hidden_state
        lp, logits = target_logprobs(model, hidden, batch.input_ids, mask, 0.7)
        assert logits.shape == (int(mask.sum()), model.config.vocab_size)
        return lp.sum() + entropy_of_logits(logits).mean(), lp

    lp_full, lp_sparse = full()[1], sparse()[1]
    assert torch.allclose(lp_sparse[mask], lp_full[mask], atol=1e-6)
    assert not lp_sparse[~mask].any()  # nothing outside the actions
    for a, b in zip(grads(lambda: full()[0]), grads(lambda: sparse()[0])):
        assert torch.allclose(a, b, atol=1e-5)


def test_update_with_entropy_and_kl_reports_the_action_tokens_entropy():
    """The learner's reported entropy is the mean over action tokens, with and without the entropy term."""
    from arbor.learner.losses import entropy_from_logits

    torch.manual_seed(0)
    model, tok = build_policy(TINY)
    samples = _samples(tok, model)
    batch = collate_steps(samples, tok.pad_token_id, 64, 0)
    with torch.no_grad():
        logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
    expected = float(entropy_from_logits(logits[:, :-1], batch.action_mask))
    reference, _ = build_policy(TINY)
    reference.load_state_dict(model.state_dict())
    learner = _learner(model, tok, reference=reference, entropy_coef=0.01, kl_coef=0.1)
    m = learner.update(samples, 0)
    assert m["learner/entropy"] == pytest.approx(expected, rel=1e-5)
    assert m["learner/kl"] == pytest.approx(0.0, abs=1e-6)  # reference == policy before the step
    m2 = learner.update(samples, 1)
    assert m2["learner/kl"] > 0  # the step moved the policy away from its frozen copy


def test_gradient_checkpointing_takes_the_same_step(tmp_path):
    """train.gradient_checkpointing recomputes activations in the backward: same loss, same new weights, and a
    checkpoint saved from it loads and generates like any other."""
    from transformers import AutoModelForCausalLM

    from arbor.core.model import save_checkpoint

    torch.manual_seed(0)
    model, tok = build_policy(TINY)
    twin, _ = build_policy(TINY)
    twin.load_state_dict(model.state_dict())
    samples = _samples(tok, model)
    plain = _learner(model, tok)
    recomputed = _learner(twin, tok, gradient_checkpointing=True)
    assert twin.is_activation_checkpointing and not model.is_activation_checkpointing
    a, b = plain.update(samples, 0), recomputed.update(samples, 0)
    assert b["learner/loss"] == pytest.approx(a["learner/loss"], rel=1e-6)
    assert b["learner/grad_norm"] == pytest.approx(a["learner/grad_norm"], rel=1e-4)
    for (name, p), q in zip(model.named_parameters(), twin.parameters()):
        assert torch.allclose(p, q, atol=1e-6), name
    save_checkpoint(tmp_path / "ckpt", twin, tok)
    again = AutoModelForCausalLM.from_pretrained(tmp_path / "ckpt").eval()
    assert not again.is_activation_checkpointing
    ids = torch.tensor([samples[0].state_tokens])
    assert again.generate(ids, max_new_tokens=4, do_sample=False).shape == (1, ids.shape[1] + 4)


def test_imitated_samples_train_by_likelihood_not_by_advantage_and_not_the_value_head():
    torch.manual_seed(0)
    model, tok = build_policy(TINY)
    plain = _samples(tok, model, 2)
    traces = _samples(tok, model, 2)
    traces = [dataclasses.replace(s, source="journey", advantage=-5.0, value_target=0.0) for s in traces]
    traces = [dataclasses.replace(s, state_tokens=s.state_tokens + [5]) for s in traces]  # rows of their own
    batch = collate_steps(plain + traces, tok.pad_token_id, 64, 0)
    rows = batch.sample_row.tolist()
    assert not batch.imitate_mask[rows[0]].any() and not batch.imitate_mask[rows[1]].any()
    for i in (2, 3):
        assert int(batch.imitate_mask[rows[i]].sum()) == len(traces[i - 2].action_tokens)
        assert not batch.value_mask[rows[i]].any()  # no value target for a state the policy did not reach
    ids = [s.action_tokens for s in traces]

    def trace_logp() -> float:
        with torch.no_grad():
            total = 0.0
            for s in traces:
                x = torch.tensor([s.state_tokens + s.action_tokens])
                total += token_logprobs(model(input_ids=x).logits, x, 1.0)[0, len(s.state_tokens) - 1 :].sum()
            return float(total)

    before = trace_logp()
    learner = _learner(model, tok)
    m = learner.update(traces, 0)
    assert m["learner/imitated_token_fraction"] == 1.0 and m["learner/policy_loss"] == 0.0
    assert m["learner/imitation_loss"] == pytest.approx(-before / sum(map(len, ids)), rel=1e-4)
    assert trace_logp() > before  # their negative advantage was ignored: likelihood went up


def test_visit_shares_group_sibling_steps_of_one_tree():
    from arbor.learner.batch import visit_groups

    def s(tree: str, parent: int, share: float | None) -> StepSample:
        return StepSample([1], [2], [0.0], 0, 0.0, 0.0, 0.0, meta={"tree": tree, "parent": parent}, visit_share=share)

    out = visit_groups([s("a/0", 0, 0.5), s("a/0", 0, 0.5), s("a/0", 3, 1.0), s("b/0", 0, 0.2), s("b/0", 0, None)])
    assert out["visit_group"].tolist() == [0, 0, 1, 2, -1]
    assert out["visit_share"].tolist() == pytest.approx([0.5, 0.5, 1.0, 0.2, 0.0])


def test_length_buckets_give_the_one_call_forward_and_gradients():
    from arbor.learner.actor_critic import PolicyWithValue, length_buckets

    assert length_buckets([10, 3, 9, 5, 6]) == [([0, 2, 4], 10), ([3, 1], 5)]
    torch.manual_seed(0)
    model, tok = build_policy(TINY)
    samples = _samples(tok, model, 3)
    long = dataclasses.replace(samples[0], state_tokens=samples[0].state_tokens * 3)  # a row 2-3x the others
    batch = collate_steps([*samples, long], tok.pad_token_id, 64, 0)
    net = PolicyWithValue(model, ValueHead(hidden_size_of(model)), value_trunk_grad=True)
    outs, grads = [], []
    for ratio in (0.6, 0.0):  # 0.0: every row in one bucket, the plain one-call forward
        net.bucket_ratio = ratio
        net.zero_grad()
        logp, logits, values = net(batch.input_ids, batch.attention_mask, batch.action_mask, 1.0)
        (logp.sum() + values[batch.value_mask].sum() + logits.square().mean()).backward()
        outs.append((logp.detach(), logits.detach(), values.detach()[batch.value_mask]))  # values past a row: unused
        grads.append(torch.cat([p.grad.flatten() for p in net.parameters() if p.grad is not None]))
    assert len(length_buckets(batch.attention_mask.sum(1).tolist())) == 2
    for a, b in zip(*outs):
        assert a.shape == b.shape and torch.allclose(a, b, atol=1e-5)
    assert torch.allclose(grads[0], grads[1], atol=1e-5)
