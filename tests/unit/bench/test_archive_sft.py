"""``bench/archive_sft.py`` reads a run's self-imitation archive back as text the verifier judges."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from arbor.core.config import load_config
from arbor.core.errors import ConfigError
from arbor.core.samples import StepSample
from arbor.core.tasks import build_task
from arbor.core.tokenizer import build_char_tokenizer
from arbor.reward import verify
from tests.conftest import REPO

sys.path.insert(0, str(REPO / "bench"))
from archive_sft import archived_responses  # noqa: E402


def archive_of(problem, response: str, tok, uid: str | None = None) -> list[dict]:
    """``response`` as the archive stores it: one step sample per line, each state the prompt and the lines
    before it, the last action ending at the eos."""
    state = tok(problem.prompt, add_special_tokens=False)["input_ids"]
    lines = response.splitlines(keepends=True)
    samples = []
    for i, line in enumerate(lines):
        action = tok(line, add_special_tokens=False)["input_ids"] + ([tok.eos_token_id] if i == len(lines) - 1 else [])
        samples.append(
            StepSample(
                list(state),
                action,
                [0.0] * len(action),
                0,
                1.0,
                1.0,
                1.0,
                source="shortcut",
                problem_uid=uid or problem.uid,
            ).to_json()
        )
        state += action
    return samples


def write_run(root: Path, solutions: list[list[dict]]) -> Path:
    step = root / "checkpoints" / "step-000003"
    step.mkdir(parents=True)
    (root / "checkpoints" / "latest").write_text("step-000003")
    (step / "replay.json").write_text(json.dumps({"extra": {"solutions": solutions}}))
    return root


def test_archived_responses_read_back_the_text_that_was_archived(tmp_path):
    task, tok = build_task(load_config(None, []).task), build_char_tokenizer()
    right, other = task.train_problem(5), task.train_problem(6)
    wrong = right.solution.replace(right.solution.splitlines()[-1], "The answer is 0")
    run = write_run(
        tmp_path,
        [
            archive_of(right, right.solution, tok),
            archive_of(other, wrong, tok),
            archive_of(right, right.solution, tok, uid="hindsight/some-key"),
        ],
    )
    read = archived_responses(run, task, tok)
    # the relabelled problem has no training index and is left out; the texts come back as archived
    assert [(p.uid, text) for p, text in read] == [(right.uid, right.solution), (other.uid, wrong)]
    assert verify("countdown", read[0][1], read[0][0].reference)
    assert not verify("countdown", read[1][1], read[1][0].reference)


def test_archived_responses_name_the_file_when_the_archive_is_missing_or_foreign(tmp_path):
    task, tok = build_task(load_config(None, []).task), build_char_tokenizer()
    with pytest.raises(ConfigError, match="checkpoints/latest"):
        archived_responses(tmp_path, task, tok)
    empty = write_run(tmp_path / "empty", [])
    with pytest.raises(ConfigError, match="replay.json.*solution_replay"):
        archived_responses(empty, task, tok)
    # an archive of another problem's prompt under this uid (another task config): refused, not misread
    a, b = task.train_problem(5), task.train_problem(6)
    foreign = write_run(tmp_path / "foreign", [archive_of(a, a.solution, tok, uid=b.uid)])
    with pytest.raises(ValueError, match=f"{b.uid} does not start with its problem's prompt"):
        archived_responses(foreign, task, tok)
