"""The OVM value fit: prefix labelling, metrics and the head's regression by hand, then ``arbor value`` end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from arbor.core.config import ValueConfig, load_config
from arbor.core.errors import ConfigError
from arbor.core.model import forward_with_hidden, load_value_head
from arbor.launch.cli import main
from arbor.learner.value_fit import (
    LabelledSequence,
    PrefixFeatures,
    calibration,
    fit_value_head,
    label_chain,
    prefix_ends,
    prefix_features,
    roc_auc,
    split_by_group,
    value_report,
)
from tests.conftest import DEFAULT_CONFIG


def test_prefix_ends_are_the_last_token_of_prompt_and_each_step():
    assert prefix_ends([5, 3, 4]) == [4, 7, 11]
    assert prefix_ends([1]) == [0]
    with pytest.raises(ValueError, match="at least one token"):
        prefix_ends([3, 0])


def test_every_prefix_of_a_chain_carries_the_chain_outcome():
    seq = label_chain([[10, 11], [12, 13, 14], [15]], outcome=1, group="p0")
    assert seq.input_ids == [10, 11, 12, 13, 14, 15]
    assert seq.positions == [1, 4, 5] and seq.outcome == 1.0 and seq.group == "p0"


def test_roc_auc_by_hand():
    # positives 0.35, 0.8 vs negatives 0.1, 0.4: 0.35 beats 0.1 only, 0.8 beats both -> 3 of 4 pairs
    assert roc_auc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]) == pytest.approx(0.75)
    assert roc_auc([0.5, 0.5], [1, 0]) == pytest.approx(0.5)  # a tie counts half
    assert roc_auc([0.9, 0.1], [1, 0]) == 1.0
    assert roc_auc([0.3, 0.7], [0, 0]) is None  # undefined with one class


def test_calibration_by_hand():
    # bin [0, .5): predicted .1, observed .5, weight 1/2; bin [.5, 1]: predicted .9, observed 1, weight 1/2
    ece, table = calibration([0.1, 0.1, 0.9, 0.9], [0, 1, 1, 1], bins=2)
    assert ece == pytest.approx(0.5 * 0.4 + 0.5 * 0.1)
    assert [row["count"] for row in table] == [2.0, 2.0]
    assert calibration([1.0], [1], bins=4)[1][0]["high"] == 1.0  # a value of exactly 1 lands in the top bin


def test_split_keeps_each_problem_on_one_side():
    seqs = [LabelledSequence([1], [0], float(i % 2), f"p{i // 3}") for i in range(30)]  # 10 problems x 3
    fit, held = split_by_group(seqs, 0.2, seed=0)
    assert {s.group for s in fit}.isdisjoint({s.group for s in held})
    assert len({s.group for s in held}) == 2 and len(fit) + len(held) == 30
    with pytest.raises(ValueError, match="2 problems"):
        split_by_group(seqs[:3], 0.2, seed=0)


def test_fit_learns_a_separable_outcome_and_is_calibrated():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2000, 8, generator=gen)
    y = (x[:, 0] + 0.3 * torch.randn(2000, generator=gen) > 0.5).float()  # ~31% positives, mostly set by x0
    features = PrefixFeatures(x, y, torch.ones(2000, dtype=torch.bool))
    head = fit_value_head(features, ValueConfig(steps=300, batch_size=256, lr=5e-2))
    report = value_report(head, features, bins=10)
    assert report["auc"] > 0.95 and report["final_auc"] == report["auc"]
    assert abs(report["mean_value"] - report["base_rate"]) < 0.03
    assert report["ece"] < 0.05
    assert abs(head.proj.weight[0, 0]) > 5 * head.proj.weight[0, 1:].abs().max()  # it found the right feature


def test_prefix_features_match_an_unpadded_forward(policy_checkpoints):
    model = AutoModelForCausalLM.from_pretrained(policy_checkpoints["sft"])
    seqs = [label_chain([[5, 6, 7], [8, 9]], 1, "a"), label_chain([[5, 6], [9], [10, 11, 12]], 0, "b")]
    features = prefix_features(model, seqs, batch_size=2, pad_id=0)  # the shorter row is right-padded
    assert features.targets.tolist() == [1, 1, 0, 0, 0]
    assert features.final.tolist() == [False, True, False, False, True]
    row = 0
    for seq in seqs:
        _, hidden, _ = forward_with_hidden(model, torch.tensor([seq.input_ids]))
        for pos in seq.positions:
            torch.testing.assert_close(features.hidden[row], hidden[0, pos], atol=1e-5, rtol=1e-5)
            row += 1


def test_value_command_saves_policy_and_head_with_a_report(policy_checkpoints):
    ckpt: Path = policy_checkpoints["value"]
    model = AutoModelForCausalLM.from_pretrained(ckpt)  # plain transformers still loads it
    head = load_value_head(ckpt, model)
    assert head is not None
    report = json.loads((policy_checkpoints["value_run"] / "value_report.json").read_text())
    assert report["samples"] == 24 * 4
    held, fit = report["held_out"], report["fit"]
    assert held["prefixes"] > 0 and fit["prefixes"] > held["prefixes"]  # 20% of the problems are held out
    assert 0.0 <= held["base_rate"] <= 1.0 and 0.0 <= held["ece"] <= 1.0
    # the head predicts the fitted outcome rate (the bias starts at its logit)
    assert abs(fit["mean_value"] - fit["base_rate"]) < 0.05
    meta = json.loads((ckpt / "arbor.json").read_text())
    assert meta["command"] == "value" and meta["policy"] == str(policy_checkpoints["sft"])


def test_value_needs_a_policy_and_checks_its_section(tmp_path: Path, capsys):
    assert main(["value", str(DEFAULT_CONFIG), f"run.root={tmp_path}", "wandb.mode=disabled"]) == 2
    assert "model.path" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())
    for override, key in [
        ("value.steps=0", "value.steps"),
        ("value.holdout_fraction=1.0", "value.holdout_fraction"),
        ("value.problems=1", "value.problems"),
    ]:
        with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
            load_config(DEFAULT_CONFIG, [override])


def test_value_problems_are_distinct_by_content_and_skip_held_out_and_sft_pool():
    """Seeds can repeat a problem; the fit and its held-out report split by problem, so content must not repeat.
    The fit draws from RL's problems only: never held out, never one of the SFT demonstrations."""
    from arbor.core.tasks import build_task
    from arbor.core.tasks.split import demonstration_pool
    from arbor.learner.value_fit import value_problems

    cfg = load_config(DEFAULT_CONFIG, ["value.problems=512"])
    assert cfg.sft.num_problems == 1000  # the default recipe caps SFT to a pool
    task = build_task(cfg.task)
    held = {p.key for p in task.eval_problems()}
    pool = {p.key for p in demonstration_pool(task, cfg.sft.num_problems, cfg.sft.difficulty_mix)}
    problems = value_problems(task, cfg)
    keys = [p.key for p in problems]
    assert len(problems) == 512 and len(set(keys)) == 512
    assert not set(keys) & held
    assert not set(keys) & pool
    # without the cap, pool problems are fair game: the same stretch of seeds then meets some of them
    uncapped = value_problems(task, load_config(DEFAULT_CONFIG, ["value.problems=512", "sft.num_problems=0"]))
    assert {p.key for p in uncapped} & pool
