"""Journey traces: a search tree -> one response in the task's journey format -> the verifier's verdict, and
the imitation samples a finished tree adds (``train.journey``)."""

from __future__ import annotations

import pytest

from arbor.actors.journey import journey_trace, trace_samples
from arbor.core.config import ArborConfig, load_config
from arbor.core.errors import ConfigError
from arbor.core.tasks.base import Problem
from arbor.core.tasks.countdown import journey_response
from arbor.core.tokenizer import build_char_tokenizer
from arbor.core.tree import SearchTree, compute_mc_values
from arbor.reward import check, step_fault, verify
from tests.search_toy import text_tree

REF = {"numbers": [13, 7, 25, 3], "target": 27}
PROBLEM = Problem("countdown", "countdown/train/0", "k", "Use 13 7 25 3 to make 27.\n", REF)

JOURNEY = """13-7=6
6+3=9
fail, back to 3 6 25
6/3=2
25+2=27
Solution:
13-7=6
6/3=2
25+2=27
Answer: 27"""


def _tree(right: bool = True) -> SearchTree:
    """root -> 13-7=6 -> {6+3=9 -> 25-9=16 -> Answer: 16 (0), 6/3=2 -> 25+2=27 -> Answer: 27 (1 if right)}."""
    return text_tree(
        PROBLEM.uid,
        PROBLEM.prompt,
        [
            (["13-7=6\n", "6+3=9\n", "25-9=16\n", "Answer: 16"], 0.0),
            (["13-7=6\n", "6/3=2\n", "25+2=27\n", "Answer: 27"], 1.0 if right else 0.0),
        ],
    )


def _cfg(*overrides: str) -> ArborConfig:
    return load_config(None, list(overrides))


def test_a_tree_becomes_the_journey_its_search_walked_and_the_verifier_accepts_it():
    tree = _tree()
    compute_mc_values(tree)
    text = journey_trace(tree, PROBLEM, max_dead_ends=2, fits=lambda _: True)
    assert text == JOURNEY
    assert check("countdown", text, REF).correct
    # no dead end allowed: the plain successful path, no summary
    assert journey_trace(tree, PROBLEM, 0, lambda _: True) == "13-7=6\n6/3=2\n25+2=27\nAnswer: 27"
    # too long with its dead end: the dead end is dropped, not the path
    assert journey_trace(tree, PROBLEM, 2, lambda t: len(t) < 60) == "13-7=6\n6/3=2\n25+2=27\nAnswer: 27"
    unsolved = _tree(right=False)
    compute_mc_values(unsolved)
    assert journey_trace(unsolved, PROBLEM, 2, lambda _: True) is None


@pytest.mark.parametrize(
    "old, new, why",
    [
        ("Solution:\n13-7=6\n6/3=2", "Solution:\n13-7=6\n6/3=3", "left side equals 2"),  # final path arithmetic
        ("Answer: 27", "Answer: 26", "not the target"),  # final answer
        ("Solution:\n13-7=6\n6/3=2\n25+2=27", "Solution:\n13-7=6\n6/3=2", "not produced"),  # path stops short
        ("fail, back to 3 6 25", "fail, back to 9 25", "not an earlier state"),  # back to the current state
        ("fail, back to 3 6 25", "fail, back to 3 7 25", "not an earlier state"),  # a state never reached
        ("6+3=9", "6+3=8", "left side equals 9"),  # an illegal exploration step
        ("6+3=9", "6+13=19", "not available"),  # a number used up on this branch
    ],
)
def test_the_verifier_rejects_a_journey_whose_walk_or_final_path_is_wrong(old: str, new: str, why: str):
    bad = JOURNEY.replace(old, new)
    assert bad != JOURNEY
    verdict = check("countdown", bad, REF)
    assert not verdict.correct and why in verdict.reason


def test_step_checks_walk_back_lines_as_the_verifier_does():
    upto_back = JOURNEY.split("6/3=2")[0]
    assert upto_back.endswith("fail, back to 3 6 25\n") and step_fault("countdown", upto_back, REF) is None
    assert step_fault("countdown", upto_back + "25-6=19\n", REF) is None  # 6 is back after the back line
    assert step_fault("countdown", upto_back + "fail, back to 3 7 13 25\n25-13=12\n", REF) is None  # the start
    assert "not an earlier state" in step_fault("countdown", "13-7=6\n6+3=9\nfail, back to 9 25\n", REF)
    assert step_fault("countdown", JOURNEY.split("Answer")[0], REF) is None


def test_journey_response_refuses_a_branch_that_does_not_leave_the_last_one():
    with pytest.raises(ValueError, match="does not leave"):
        journey_response([13, 7, 25, 3], [["13-7=6"], ["13-7=6", "6/3=2"]], "Answer: 2")
    assert verify("countdown", journey_response([1, 2], [["1+2=3"]], "Answer: 3"), {"numbers": [1, 2], "target": 3})


@pytest.mark.parametrize("mode, expected", [("journey", JOURNEY), ("shortcut", "13-7=6\n6/3=2\n25+2=27\nAnswer: 27")])
def test_trace_samples_are_imitation_steps_after_the_prompt(mode: str, expected: str):
    tok = build_char_tokenizer()
    tree = _tree()
    cfg = _cfg(f"train.journey.mode={mode}", "search.max_response_tokens=160")
    samples = trace_samples(tree, PROBLEM, cfg, tok, 256)
    assert {s.source for s in samples} == {mode} and all(s.policy_version == 3 for s in samples)
    assert samples[0].state_tokens == tree.prompt_tokens and samples[-1].action_tokens[-1] == tok.eos_token_id
    for a, b in zip(samples, samples[1:]):
        assert b.state_tokens == a.state_tokens + a.action_tokens
    assert tok.decode([t for s in samples for t in s.action_tokens], skip_special_tokens=True) == expected
    assert len(samples) == expected.count("\n") + 1
    assert trace_samples(tree, PROBLEM, _cfg("train.journey.mode=off", "buffer.solution_replay=0"), tok, 256) == []
    # the learner's positions bound the trace too: only the plain path fits 26 + 40 tokens
    short = trace_samples(tree, PROBLEM, _cfg("train.journey.mode=journey", "search.max_response_tokens=160"), tok, 66)
    assert all(s.source == "journey" for s in short) and len(short) == 4


def test_a_task_without_a_journey_format_is_refused_by_name():
    with pytest.raises(ConfigError, match="train.journey.mode"):
        _cfg("task.name=arith", "train.journey.mode=journey")
    assert str(_cfg("task.name=arith", "train.journey.mode=shortcut").train.journey.mode) == "shortcut"


def test_solution_replay_without_imitated_responses_is_refused_by_name():
    with pytest.raises(ConfigError, match="buffer.solution_replay"):
        _cfg("buffer.solution_replay=0.25", "train.journey.mode=off")
    assert _cfg("buffer.solution_replay=0.25", "train.journey.mode=shortcut").buffer.solution_replay == 0.25
    assert str(_cfg().train.journey.mode) == "shortcut" and _cfg().buffer.solution_replay > 0  # the recipe
