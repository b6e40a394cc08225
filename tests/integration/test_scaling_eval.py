"""``arbor eval ... search.budgets=[...]`` end to end on the tiny model: table, JSON, PNG, clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from arbor.core.config import load_config
from arbor.core.errors import ConfigError
from arbor.launch.cli import main
from tests.conftest import DEFAULT_CONFIG, SMALL_SEARCH, TINY

SCALING = [
    *TINY,
    *SMALL_SEARCH,
    "threads=1",
    "task.eval_size=4",
    "eval.num_samples=0",
    "search.budgets=[1,2]",
    "search.mcts.simulations=4",
    "search.children=2",
    "search.beam.width=2",
]


def test_eval_with_budgets_writes_curve_and_plot(policy_checkpoints, tmp_path: Path):
    root = tmp_path / "runs"
    assert (
        main(["eval", str(DEFAULT_CONFIG), *SCALING, f"run.root={root}", f"model.path={policy_checkpoints['value']}"])
        == 0
    )
    (run,) = root.glob("eval-*")
    data = json.loads((run / "scaling.json").read_text())
    points = data["points"]
    assert data["problems"] == 4
    assert [(p["kind"], p["budget"]) for p in points] == [
        ("greedy", 1),
        ("best_of_n", 1),
        ("beam", 1),
        ("mcts", 1),
        ("best_of_n", 2),
        ("beam", 2),
        ("mcts", 2),
    ]
    assert all(0.0 <= p["accuracy"] <= 1.0 and p["generated_tokens"] > 0 for p in points)
    bon = {p["budget"]: p["generated_tokens"] for p in points if p["kind"] == "best_of_n"}
    assert bon[2] > bon[1]  # a bigger budget spends more tokens
    mcts = {p["budget"]: p["generated_tokens"] for p in points if p["kind"] == "mcts"}
    assert all(mcts[b] >= bon[b] for b in bon)  # MCTS runs until it has spent best-of-N's tokens
    assert (run / "scaling.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert any("scaling/mcts/accuracy" in r and r["step"] == 2 for r in rows)
    assert "scaling/beam@2" in json.loads((run / "summary.json").read_text())


def test_budgets_without_a_value_head_name_model_path(policy_checkpoints, tmp_path: Path, capsys):
    sft = policy_checkpoints["sft"]  # a policy with no value_head.safetensors beside it
    assert main(["eval", str(DEFAULT_CONFIG), *SCALING, f"run.root={tmp_path}", f"model.path={sft}"]) == 2
    err = capsys.readouterr().err
    assert "model.path" in err and "arbor value" in err
    assert not any(tmp_path.iterdir())  # rejected before a run directory was made


def test_scaling_kinds_are_checked():
    with pytest.raises(ConfigError, match=r"search\.kinds"):
        load_config(DEFAULT_CONFIG, ["search.kinds=[mcts,sideways]"])
    with pytest.raises(ConfigError, match=r"search\.kinds"):
        load_config(DEFAULT_CONFIG, ["search.kinds=[]"])
    assert load_config(DEFAULT_CONFIG).search.budgets == []  # plain `arbor eval` runs no search
