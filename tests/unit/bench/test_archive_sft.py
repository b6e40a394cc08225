"""``bench/archive_sft.py`` reads a run's self-imitation archive back as the text the verifier judged, and the
problems its actors searched from the tree ledger."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from arbor.actors.ledger import TreeLedger
from arbor.actors.solutions import SolutionArchive
from arbor.core.config import load_config
from arbor.core.errors import ConfigError
from arbor.core.samples import response_samples
from arbor.core.tasks import build_task
from arbor.core.tasks.split import problems_to_skip, rollout_index
from arbor.core.tokenizer import build_char_tokenizer
from arbor.reward import verify
from tests.conftest import REPO

sys.path.insert(0, str(REPO / "bench"))
from archive_sft import Counted, archived_responses, latest_replay, searched_problems  # noqa: E402


def archived(problem, response: str, tok, uid: str | None = None) -> list[dict]:
    """``response`` archived as the actors archive a best path: its step samples, through the archive."""
    state = tok(problem.prompt, add_special_tokens=False)["input_ids"]
    samples = response_samples(state, response, tok, 0, problem_uid=uid or problem.uid, source="shortcut")
    archive = SolutionArchive(8)
    assert archive.add(samples) == 1
    return archive.to_json()[0]


def write_run(root: Path, solutions: list[list[dict]], trees: dict | None = None) -> Path:
    step = root / "checkpoints" / "step-000003"
    step.mkdir(parents=True)
    (root / "checkpoints" / "latest").write_text("step-000003")
    (step / "replay.json").write_text(json.dumps({"extra": {"solutions": solutions, "trees": trees or {}}}))
    return root


def setup():
    cfg = load_config(None, [])
    return cfg, build_task(cfg.task), build_char_tokenizer()


def test_archived_responses_read_back_the_text_that_was_archived(tmp_path):
    _, task, tok = setup()
    right, other = task.train_problem(5), task.train_problem(6)
    wrong = right.solution.replace(right.solution.splitlines()[-1], "The answer is 0")
    run = write_run(
        tmp_path,
        [
            archived(right, right.solution, tok),
            archived(other, wrong, tok),
            archived(right, right.solution, tok, "hindsight/k"),
        ],
    )
    read, relabelled = archived_responses(*latest_replay(run), task, tok)
    # the relabelled problem has no training index: left out, and counted
    assert relabelled == 1
    assert [(p.uid, text) for p, text in read] == [(right.uid, right.solution), (other.uid, wrong)]
    assert verify("countdown", read[0][1], read[0][0].reference)
    assert not verify("countdown", read[1][1], read[1][0].reference)


def test_archived_responses_name_the_file_when_the_archive_is_missing_or_foreign(tmp_path):
    _, task, tok = setup()
    with pytest.raises(ConfigError, match="checkpoints/latest"):
        latest_replay(tmp_path)
    with pytest.raises(ConfigError, match="replay.json.*solution_replay"):
        archived_responses(*latest_replay(write_run(tmp_path / "empty", [])), task, tok)
    a, b = task.train_problem(5), task.train_problem(6)
    # another problem's path under this uid (a run of another task config): refused, not misread
    foreign = write_run(tmp_path / "foreign", [archived(a, a.solution, tok, uid=b.uid)])
    with pytest.raises(ValueError, match=f"{b.uid} does not start with its problem's prompt"):
        archived_responses(*latest_replay(foreign), task, tok)
    # a path whose middle step's state is not the path so far
    broken = archived(a, a.solution, tok)
    broken[1]["state_tokens"] = broken[1]["state_tokens"][:-1]
    with pytest.raises(ValueError, match="do not chain"):
        archived_responses(*latest_replay(write_run(tmp_path / "broken", [broken])), task, tok)


def test_searched_problems_are_the_ledgers_inserted_trees(tmp_path):
    cfg, task, tok = setup()
    cfg.resources.rollout_actors = 2
    ledger = TreeLedger()
    ledger.begin(["rollout-0/3", "rollout-0/4", "rollout-1/7", "rollout-0/9"])
    ledger.inserted = {"rollout-0": {3, 9}, "rollout-1": {7}}  # rollout-0/4 was cut short by the stop
    run = write_run(tmp_path, [archived(task.train_problem(5), task.train_problem(5).solution, tok)], ledger.to_json())
    uids = [p.uid for p in searched_problems(*latest_replay(run), cfg, task)]
    expected = [(3, 0), (9, 0), (7, 1)]
    assert uids == [f"countdown/train/{rollout_index(cfg.train.seed, c, 2, a)}" for c, a in expected]
    with pytest.raises(ConfigError, match="no inserted tree"):
        searched_problems(*latest_replay(write_run(tmp_path / "none", [[]])), cfg, task)


def test_counted_counts_only_what_sft_trains_on():
    cfg, task, _ = setup()
    skip = problems_to_skip(cfg, task)  # held-out contents and the SFT pool's
    fresh = [p for p in map(task.train_problem, range(5000, 5100)) if p.key not in skip][:2]
    pooled = next(p for p in map(task.train_problem, range(5000, 5100)) if p.key in skip)
    held = task.eval_problems()[0]
    stream = Counted(iter([fresh[0], held, pooled, fresh[0], fresh[1]]), skip)
    assert [p.uid for p in stream] == [fresh[0].uid, held.uid, pooled.uid, fresh[0].uid, fresh[1].uid]
    assert stream.trained == 3 and stream.contents == {fresh[0].key, fresh[1].key}
