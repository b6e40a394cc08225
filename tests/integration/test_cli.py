"""The arbor CLI end to end on a tiny model: run directories, checkpoints, evaluation, clear errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from arbor.actors.evaluate import majority_correct, pass_at_k
from arbor.launch.cli import main
from tests.conftest import DEFAULT_CONFIG, REPO, TINY

FAST = TINY + [
    "task.eval_size=6",
    "sft.steps=3",
    "sft.batch_size=8",
    "sft.engine=torch",
    "eval.batch_size=6",
    "eval.max_new_tokens=16",
    "eval.num_samples=2",
    "eval.ks=[1,2]",
]


def _runs(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir())


def test_sft_then_eval_write_run_directories(tmp_path: Path):
    root = tmp_path / "runs"
    assert main(["sft", str(DEFAULT_CONFIG), *FAST, f"run.root={root}"]) == 0
    (run,) = _runs(root)
    ckpt = run / "checkpoints" / "sft"
    assert (ckpt / "model.safetensors").is_file() and (ckpt / "tokenizer.json").is_file()
    assert "steps: 3" in (run / "config.yaml").read_text()
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert any("sft/loss" in r for r in rows) and any("eval/greedy_accuracy" in r for r in rows)
    summary = json.loads((run / "summary.json").read_text())
    assert 0.0 <= summary["sft_greedy_accuracy"] <= 1.0 and "init_greedy_accuracy" in summary

    assert main(["eval", str(DEFAULT_CONFIG), *FAST, f"run.root={root}", f"model.path={ckpt}"]) == 0
    eval_run = next(p for p in _runs(root) if p.name.startswith("eval-"))
    result = json.loads((eval_run / "eval_result.json").read_text())
    assert result["num_problems"] == 6 and set(result["pass_at"]) == {"1", "2"}
    assert all(0.0 <= v <= 1.0 for v in result["maj_at"].values())


def test_unknown_key_exits_2_naming_the_dotted_key(tmp_path: Path):
    proc = subprocess.run(
        [sys.executable, "-m", "arbor.launch.cli", "sft", str(DEFAULT_CONFIG), "no_such.key=1", f"run.root={tmp_path}"],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert proc.returncode == 2
    assert "no_such.key" in proc.stderr
    assert not any(tmp_path.iterdir())  # nothing was started, nothing written


def test_wrong_type_exits_2(capsys):
    assert main(["sft", str(DEFAULT_CONFIG), "sft.steps=ten"]) == 2
    err = capsys.readouterr().err
    assert "sft.steps" in err and "int" in err


@pytest.mark.parametrize("command", ["sft", "train"])
def test_sft_pool_larger_than_the_task_exits_2_before_any_work(tmp_path: Path, capsys, command: str):
    """Countdown with three numbers up to 3 has a few dozen problems; a 5000-problem pool is refused at once:
    no run directory, no init evaluation, no Ray."""
    small = ["task.countdown.max_numbers=3", "task.countdown.max_operand=3", "task.eval_size=4"]
    root = tmp_path / "runs"
    args = [command, str(DEFAULT_CONFIG), *FAST, *small, f"run.root={root}", "sft.num_problems=5000"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "sft.num_problems=5000" in err and "distinct training problems" in err
    assert not root.exists() or not any(root.iterdir())


def test_missing_model_directory_is_named_and_existing_runs_untouched(tmp_path: Path, capsys):
    root = tmp_path / "runs"
    keep = root / "earlier"
    keep.mkdir(parents=True)
    (keep / "precious.txt").write_text("x")
    missing = tmp_path / "no_model_here"
    assert main(["eval", str(DEFAULT_CONFIG), *FAST, f"run.root={root}", f"model.path={missing}"]) == 2
    assert str(missing) in capsys.readouterr().err
    assert _runs(root) == [keep] and (keep / "precious.txt").read_text() == "x"


@pytest.mark.parametrize(
    "content, expect",
    [("", "empty"), ('{"question": "q"}\n', ":1"), ('\n{oops\n{"question": "q"}\n', ":2")],
)
def test_jsonl_without_usable_rows_names_file_and_line(tmp_path: Path, capsys, content: str, expect: str):
    data = tmp_path / "bad.jsonl"
    data.write_text(content)
    args = ["eval", str(DEFAULT_CONFIG), *FAST, "task.name=gsm8k", f"task.data.path={data}", f"run.root={tmp_path}"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "bad.jsonl" in err and expect in err


def test_pass_at_k_matches_hand_computation():
    assert pass_at_k(4, 0, 1) == 0.0
    assert pass_at_k(4, 1, 1) == pytest.approx(0.25)
    assert pass_at_k(4, 1, 2) == pytest.approx(1 - 3 / 6)  # 1 - C(3,2)/C(4,2)
    assert pass_at_k(4, 3, 2) == 1.0


def test_majority_vote_submits_the_winning_answer():
    responses = ["1+2=3\nAnswer: 3", "Answer: 4", "2+2=4\nAnswer: 4", "no answer"]
    assert majority_correct("arith", responses, [True, False, True, False]) is False  # "4" wins; its first is wrong
    assert majority_correct("arith", responses[:1], [True]) is True
    assert majority_correct("arith", ["nothing"], [False]) is False
