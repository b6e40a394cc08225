"""Run directories and the logger: JSONL always, and a real offline wandb run when enabled."""

from __future__ import annotations

import json
import math
from pathlib import Path

from arbor.core.config import load_config
from arbor.core.runs import RunLogger, make_run_dir
from tests.conftest import DEFAULT_CONFIG


def test_run_dirs_are_never_reused(tmp_path: Path):
    cfg = load_config(DEFAULT_CONFIG, [f"run.root={tmp_path}", "run.name=same", "wandb.mode=disabled"])
    first = make_run_dir(cfg, "sft")
    (first / "checkpoints" / "keep.txt").write_text("x")
    second = make_run_dir(cfg, "sft")
    assert first != second and (first / "checkpoints" / "keep.txt").read_text() == "x"
    assert load_config(second / "config.yaml") == cfg


def test_logger_writes_jsonl_and_an_offline_wandb_run(tmp_path: Path, monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)  # the suite disables wandb; this test wants the real thing
    cfg = load_config(DEFAULT_CONFIG, [f"run.root={tmp_path}", "wandb.mode=offline"])
    run = make_run_dir(cfg, "sft")
    logger = RunLogger(run, cfg, "sft")
    logger.log({"sft/loss": 1.5, "sft/grad_norm": float("nan")}, step=1)
    logger.log({"sft/loss": 0.5}, step=2)
    logger.summary({"final": 0.25})
    logger.close()
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2] and rows[1]["sft/loss"] == 0.5
    assert math.isnan(float(rows[0]["sft/grad_norm"]))  # non-finite values stay visible, JSON stays valid
    assert json.loads((run / "summary.json").read_text()) == {"final": 0.25}
    offline = list((run / "wandb").glob("offline-run-*/*.wandb"))
    assert offline and offline[0].stat().st_size > 0


def test_checkpoints_to_prune_keeps_newest_latest_and_best(tmp_path):
    from arbor.launch.checkpoints import checkpoints_to_prune

    root = tmp_path / "checkpoints"
    for step in (10, 20, 30, 40, 50):
        (root / f"step-{step:06d}").mkdir(parents=True)
    (root / ".tmp-step-000060").mkdir()
    (root / "init").mkdir()
    (root / "latest").write_text("step-000050")
    evals = [{"step": 20, "greedy_accuracy": 0.4}, {"step": 40, "greedy_accuracy": 0.3}]
    evals.append({"step": 45, "greedy_accuracy": 0.9})  # the best, but no checkpoint holds step 45
    gone = {p.name for p in checkpoints_to_prune(tmp_path, 2, evals)}
    assert gone == {".tmp-step-000060", "step-000010", "step-000030"}  # 40, 50 newest; 20 best with a checkpoint
    assert {p.name for p in checkpoints_to_prune(tmp_path, 0, evals)} == {".tmp-step-000060"}
    (root / "latest").write_text("step-000010")  # latest is never pruned, even when older than the newest K
    assert "step-000010" not in {p.name for p in checkpoints_to_prune(tmp_path, 1, evals)}
