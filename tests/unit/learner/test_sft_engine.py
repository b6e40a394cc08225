"""SFT and the engines: real DeepSpeed (gloo, CPU) against a plain loop, prompt masking, learning."""

from __future__ import annotations

import copy

import pytest
import torch

from arbor.core.config import ModelConfig, load_config
from arbor.core.errors import DataError
from arbor.core.model import build_policy
from arbor.core.tasks import build_task
from arbor.core.tasks.split import SEED_STRIDE, demonstration_pool
from arbor.learner.engine import OptimConfig, build_engine, lr_lambda
from arbor.learner.sft import IGNORE, collate, encode_example, sft_batches, train_sft
from tests.conftest import DEFAULT_CONFIG

SMALL = ModelConfig(hidden_size=64, num_layers=2, num_heads=4, intermediate_size=128, max_seq_len=64)


def test_labels_cover_the_response_and_eos_only():
    _, tok = build_policy(SMALL)
    ids, labels = encode_example(tok, "Use 1 2 to make 3.\n", "1+2=3\nAnswer: 3", max_len=64)
    n_prompt = len("Use 1 2 to make 3.\n")
    assert labels[:n_prompt] == [IGNORE] * n_prompt
    assert labels[n_prompt:] == ids[n_prompt:]
    assert ids[-1] == tok.eos_token_id
    ids2, mask, lab = collate([(ids, labels), (ids[:5], labels[:5])], tok.pad_token_id)
    assert ids2.shape == (2, len(ids)) and int(mask[1].sum()) == 5 and (lab[1, 5:] == IGNORE).all()


def test_lr_schedule_warms_up_then_decays_to_floor():
    fn = lr_lambda(OptimConfig(lr=1.0, weight_decay=0, grad_clip=0, warmup_steps=4, total_steps=20, min_lr_ratio=0.1))
    assert fn(0) == pytest.approx(0.25) and fn(3) == pytest.approx(1.0)
    assert fn(4) == pytest.approx(1.0) and fn(20) == pytest.approx(0.1) and fn(100) == pytest.approx(0.1)
    assert all(fn(i) >= fn(i + 1) for i in range(4, 30))


def test_training_batches_skip_held_out_problems_and_corrupt_a_share(tiny_cfg):
    task = build_task(tiny_cfg.task)
    _, tok = build_policy(tiny_cfg.model)
    first = task.train_problem(tiny_cfg.sft.seed * SEED_STRIDE)
    tiny_cfg.sft.corrupt_fraction = 1.0
    batch = next(sft_batches(task, tok, tiny_cfg, exclude_keys={first.key}))
    assert batch.num_corrupt == tiny_cfg.sft.batch_size
    decoded = tok.batch_decode(batch.input_ids, skip_special_tokens=True)
    assert not any(text.startswith(first.prompt) for text in decoded)


def test_sft_pool_cycles_a_fixed_set_of_demonstrations(tiny_cfg):
    task = build_task(tiny_cfg.task)
    _, tok = build_policy(tiny_cfg.model)
    tiny_cfg.sft.num_problems, tiny_cfg.sft.corrupt_fraction = 5, 0.0
    pool = demonstration_pool(task, 5)
    assert len({p.key for p in pool}) == 5 and demonstration_pool(task, 5) == pool  # distinct and fixed
    batches = sft_batches(task, tok, tiny_cfg, exclude_keys=set())
    prompts = [text.split("\n")[0] for _ in range(3) for text in tok.batch_decode(next(batches).input_ids)]
    # every pass shows each demonstration once, so 3 batches hold all 5 and nothing else
    assert sorted(set(prompts)) == sorted(p.prompt.strip() for p in pool)
    assert len(prompts) == 3 * tiny_cfg.sft.batch_size >= 10


def test_sft_with_no_usable_demonstration_stops_with_a_message(tiny_cfg):
    task = build_task(tiny_cfg.task)
    _, tok = build_policy(tiny_cfg.model)
    tiny_cfg.sft.num_problems = 5
    every_demo = {p.key for p in demonstration_pool(task, 5)}  # all held out: nothing left to train on
    with pytest.raises(DataError, match="no usable demonstration in 100000 training problems in a row"):
        next(sft_batches(task, tok, tiny_cfg, exclude_keys=every_demo))


def test_sft_pool_larger_than_the_task_names_the_key():
    small = build_task(
        load_config(
            DEFAULT_CONFIG, ["task.countdown.max_numbers=3", "task.countdown.max_operand=3", "task.eval_size=4"]
        ).task
    )
    with pytest.raises(ValueError, match=r"sft.num_problems=5000: the task has only \d+ distinct"):
        demonstration_pool(small, 5000)


@pytest.mark.parametrize("zero_stage", [0, 2])
def test_deepspeed_engine_matches_plain_torch_loop(zero_stage: int):
    """A real DeepSpeed engine (gloo, CPU) takes the same steps as the plain PyTorch loop."""
    model, _ = build_policy(SMALL)
    twin = copy.deepcopy(model)
    cfg = OptimConfig(lr=1e-2, weight_decay=0.01, grad_clip=1.0, warmup_steps=1, total_steps=10)
    ds = build_engine(model, "deepspeed", cfg, batch_size=4, zero_stage=zero_stage)
    pt = build_engine(twin, "torch", cfg, batch_size=4)
    gen = torch.Generator().manual_seed(0)
    for _ in range(3):
        x = torch.randint(4, 100, (4, 16), generator=gen)
        loss_ds = ds(input_ids=x, labels=x).loss
        loss_pt = pt(input_ids=x, labels=x).loss
        assert torch.allclose(loss_ds, loss_pt, atol=1e-5)
        norm_ds, norm_pt = ds.step(loss_ds), pt.step(loss_pt)
        assert norm_ds == pytest.approx(norm_pt, rel=1e-4)
    assert ds.lr == pytest.approx(pt.lr)
    for a, b in zip(ds.module.parameters(), pt.module.parameters()):
        assert torch.allclose(a, b, atol=1e-5)


def test_sft_lowers_the_loss_on_held_out_traces(tiny_cfg):
    """A few dozen real updates teach the format: loss on unseen solver traces drops well below its start."""
    tiny_cfg.sft.steps = 40
    tiny_cfg.sft.batch_size = 16
    tiny_cfg.sft.lr = 3e-3
    tiny_cfg.sft.corrupt_fraction = 0.0
    task = build_task(tiny_cfg.task)
    model, tok = build_policy(tiny_cfg.model)
    held = task.eval_problems()
    examples = [encode_example(tok, p.prompt, p.solution, 64) for p in held]
    ids, mask, labels = collate(examples, tok.pad_token_id)

    def held_out_loss() -> float:
        with torch.no_grad():
            return float(model(input_ids=ids, attention_mask=mask, labels=labels).loss)

    before = held_out_loss()
    seen = []
    model = train_sft(model, tok, task, tiny_cfg, {p.key for p in held}, on_step=lambda s, m: seen.append(m))
    assert len(seen) == 40 and all(m["sft/loss"] == m["sft/loss"] for m in seen)
    assert held_out_loss() < 0.6 * before
    assert not model.training


def test_non_finite_loss_is_skipped_never_applied_and_persistent_blowup_stops(tiny_cfg):
    """A NaN in the embedding of 'U' (every prompt starts with "Use") makes every loss NaN."""
    tiny_cfg.sft.steps = 30
    tiny_cfg.sft.engine = "torch"
    task = build_task(tiny_cfg.task)
    model, tok = build_policy(tiny_cfg.model)
    with torch.no_grad():
        model.get_input_embeddings().weight[tok.convert_tokens_to_ids("U")] = float("nan")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(FloatingPointError, match="sft.lr"):
        train_sft(model, tok, task, tiny_cfg, set())
    after = model.state_dict()
    assert all(torch.equal(before[k].nan_to_num(), after[k].nan_to_num()) for k in before)  # no update applied
