"""`arbor train train.mode=local`: the same loop in one process, without Ray, resumable like the others."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from arbor.core.config import load_config
from arbor.core.errors import ConfigError
from arbor.core.tree import SearchTree
from arbor.launch.local import LocalRuntime
from arbor.launch.train import run_train
from tests.conftest import DEFAULT_CONFIG, REPO, train_overrides

LOCAL = {"train.mode": "local", "train.steps": 4, "train.eval_every": 2, "train.checkpoint_every": 2}

NO_RAY = """
import sys
from arbor.launch.cli import main
rc = main(["train", *sys.argv[1:]])
assert rc == 0, rc
assert "ray" not in sys.modules, "train.mode=local imported ray"
print("no ray")
"""


def test_local_mode_trains_without_importing_ray(init_ckpt, tmp_path):
    extra = {**LOCAL, "run.name": "local"}
    args = [str(DEFAULT_CONFIG), *train_overrides(tmp_path, init_ckpt, **extra)]
    # a fresh process, not one rank of this test process's own torch.distributed group
    env = {k: v for k, v in os.environ.items() if k not in ("MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE")}
    run = [sys.executable, "-c", NO_RAY, *args]
    out = subprocess.run(run, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0 and "no ray" in out.stdout, (out.stdout + out.stderr)[-3000:]
    result = json.loads((tmp_path / "local" / "result.json").read_text())
    assert result["steps"] == 4 and result["samples_trained"] == 4 * 16
    assert result["buffer_dropped"] == 0 and result["max_trained_lag"] <= 1  # rounds train on their own trees
    assert result["actors"]["rollout-0"]["trees"] > 0 and result["placement"]["learner"] == ["local"]
    b = result["buffer"]
    assert b["inserted"] == b["size"] + b["released"] + b["evicted_stale"] + b["evicted_capacity"]
    rows = [json.loads(line) for line in (tmp_path / "local" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "learner/loss" in r] == [1, 2, 3, 4]  # each step logged under its number
    assert [r["step"] for r in rows if "eval/greedy_accuracy" in r] == [2, 4]


def test_local_mode_resumes_at_the_same_step_and_version(init_ckpt, tmp_path):
    first = run_train(load_config(DEFAULT_CONFIG, train_overrides(tmp_path, init_ckpt, **LOCAL, **{"run.name": "a"})))
    run_dir = Path(first["run_dir"])
    (run_dir / "checkpoints" / "latest").write_text("step-000002")
    state = json.loads((run_dir / "checkpoints" / "step-000002" / "train_state.json").read_text())
    assert state["before"] == first["before"]  # the init's evaluation is in every checkpoint, not just the last
    again = run_train(load_config(DEFAULT_CONFIG, train_overrides(tmp_path, init_ckpt, **LOCAL, resume=str(run_dir))))
    assert again["steps"] == 4 and again["version"] > state["version"]
    assert again["samples_trained"] == 4 * 16  # 2 x 16 restored with the checkpoint, 2 x 16 after it
    assert again["before"] == first["before"]
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "learner/loss" in r][-2:] == [3, 4]  # it went on from step 2


def test_local_mode_refuses_a_learner_group(init_ckpt, tmp_path):
    with pytest.raises(ConfigError, match="resources.learner_ranks"):  # at load time: before anything runs
        load_config(DEFAULT_CONFIG, train_overrides(tmp_path, init_ckpt, **LOCAL, **{"resources.learner_ranks": 2}))


def test_a_partial_checkpoint_is_replaced_never_trusted(init_ckpt, tmp_path):
    """A kill mid-write leaves step-N without its state file (the old writer) or a .tmp-step-N directory
    (this one); a resume that reaches step N writes a complete step-N, and no partial directory is left."""
    extra = {**LOCAL, "train.checkpoint_every": 1, "train.keep_checkpoints": 0, "run.name": "p"}
    first = run_train(load_config(DEFAULT_CONFIG, train_overrides(tmp_path, init_ckpt, **extra)))
    root = Path(first["run_dir"]) / "checkpoints"
    assert sorted(p.name for p in root.glob("step-*")) == [f"step-00000{i}" for i in (1, 2, 3, 4)]
    (root / "latest").write_text("step-000002")
    (root / "step-000004" / "train_state.json").unlink()  # as a SIGKILL during the old in-place write left it
    (root / ".tmp-step-000003").mkdir()
    (root / ".tmp-step-000003" / "model.safetensors").write_bytes(b"torn")
    resumed = {**LOCAL, "train.checkpoint_every": 1, "train.keep_checkpoints": 0, "resume": str(root.parent)}
    again = run_train(load_config(DEFAULT_CONFIG, train_overrides(tmp_path, init_ckpt, **resumed)))
    assert again["steps"] == 4 and again["checkpoint"] == str(root / "step-000004")
    state = json.loads((root / "step-000004" / "train_state.json").read_text())
    assert state["step"] == 4 and (root / "latest").read_text() == "step-000004"
    assert not list(root.glob(".tmp-*")) and not list(root.glob(".*.tmp"))


def test_keep_checkpoints_keeps_the_newest_and_the_best_held_out_one(init_ckpt, tmp_path):
    extra = {**LOCAL, "train.steps": 5, "train.checkpoint_every": 1, "train.keep_checkpoints": 2, "run.name": "k"}
    result = run_train(load_config(DEFAULT_CONFIG, train_overrides(tmp_path, init_ckpt, **extra)))
    root = Path(result["run_dir"]) / "checkpoints"
    state = json.loads((root / "step-000005" / "train_state.json").read_text())
    evals = {e["step"]: e["greedy_accuracy"] for e in state["evals"]}
    best = max((acc, step) for step, acc in evals.items())[1]  # evaluated at steps 2 and 4
    expected = {"step-000004", "step-000005", f"step-{best:06d}"}
    assert {p.name for p in root.glob("step-*")} == expected
    assert (root / "latest").read_text() == "step-000005" and not list(root.glob(".tmp-*"))


def test_an_actor_passes_over_what_it_solved_and_gives_what_failed_the_retry_budget(init_ckpt, tmp_path):
    extra = {**LOCAL, "train.skip_solved": True, "train.retry_simulations": 6}
    runtime = LocalRuntime(load_config(DEFAULT_CONFIG, train_overrides(tmp_path, init_ckpt, **extra)))
    runtime.start("skip", str(init_ckpt), None, 0, None)
    worker = runtime.workers[0]
    worker.run(max_trees=3)
    searched = [(c, p) for c in range(worker.cursor) if (p := worker.problem_at(c)) is not None]
    assert len(searched) == 3 and worker.totals["retries"] == 0
    assert worker.solved | worker.failed == {p.key for _, p in searched}  # the random init: mostly failures
    # the first problem's tree reaches the answer after all
    (c0, p0), (c1, p1) = searched[0], searched[1]
    tree = SearchTree(p0.uid, p0.prompt, [1])
    tree.add_child(tree.root, text="x", terminal=True, outcome=1.0)
    worker._remember(p0, tree)
    assert p0.key in worker.solved and p0.key not in worker.failed
    retry = worker.search_cfg_for(p1)
    assert p1.key in worker.failed and retry.mcts.simulations == 6
    assert retry.children == worker.cfg.search.children  # only the budget changes
    worker.cursor = c0
    assert worker.next_problem() == (c1, p1) and worker.totals["skipped_solved"] == 1
    worker.cursor = c0
    worker.run(max_trees=2)  # searches p1 and p2 again, both with the retry budget; p0 is passed over
    assert worker.totals["skipped_solved"] == 2 and worker.totals["retries"] == 3  # the look above counted one
    assert worker.totals["trees"] == 5
