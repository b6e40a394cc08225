"""Hindsight relabelling (``train.hindsight``): the paths of a tree that reached another number become
verified solutions of the problems asking for that number, imitated from the solution archive only."""

from __future__ import annotations

import pytest

from arbor.actors.hindsight import hindsight_samples, relabelled
from arbor.actors.replay import ReplayBuffer
from arbor.core.config import load_config
from arbor.core.errors import ConfigError
from arbor.core.samples import StepSample
from arbor.core.tasks.base import Problem
from arbor.core.tasks.countdown import Countdown, problem_key
from arbor.core.tokenizer import build_char_tokenizer
from arbor.core.tree import SearchTree
from tests.search_toy import text_tree

REF = {"numbers": [13, 7, 25, 3], "target": 27}
PROBLEM = Problem("countdown", "countdown/train/0", problem_key([13, 7, 25, 3], 27), "Use 13 7 25 3 to make 27.\n", REF)
TASK = Countdown(load_config(None, []).task.countdown, eval_size=4)  # min_steps 2, targets up to 30
TOK = build_char_tokenizer()


def _tree() -> SearchTree:
    """Four paths from the start (fewest steps each value needs from 3 7 13 25, in brackets):

    13-7=6 [1] -> 6+3=9 [2] -> 25-9=16 [1] -> Answer: 16
    13-7=6     -> 6/3=2 [2] -> 25+2=27 (the target) -> Answer: 27
    25-3=22 [1] -> 22-13=9 (9 again, as deep as the first) -> Answer: 9
    13-3=11 (wrong: 10) -> 25-11=14 [2] -> Answer: 14
    """
    return text_tree(
        PROBLEM.uid,
        PROBLEM.prompt,
        [
            (["13-7=6\n", "6+3=9\n", "25-9=16\n", "Answer: 16"], 0.0),
            (["13-7=6\n", "6/3=2\n", "25+2=27\n", "Answer: 27"], 1.0),
            (["25-3=22\n", "22-13=9\n", "Answer: 9"], 0.0),
            (["13-3=11\n", "25-11=14\n", "Answer: 14"], 0.0),
        ],
    )


def test_a_path_is_relabelled_only_to_a_target_the_task_would_draw():
    assert TASK.hindsight(PROBLEM, ["13-7=6"]) is None  # 6 takes one step: below min_steps
    assert TASK.hindsight(PROBLEM, ["13-7=6", "6/3=2", "25+2=27"]) is None  # the problem's own target
    assert TASK.hindsight(PROBLEM, ["25-3=22", "22-9=13"]) is None  # 13 is a given number
    assert TASK.hindsight(PROBLEM, ["25+7=32", "32-3=29", "29+13=42"]) is None  # past max_target 30
    assert TASK.hindsight(PROBLEM, []) is None and TASK.hindsight(PROBLEM, ["Answer: 9"]) is None
    malformed = Problem("countdown", "countdown/train/1", "k", PROBLEM.prompt, {})  # a poisoned data row
    assert TASK.hindsight(malformed, ["13-7=6", "6+3=9"]) is None
    new = TASK.hindsight(PROBLEM, ["13-7=6\n", " 6+3=9"])
    assert new.key == problem_key([3, 7, 13, 25], 9) and new.reference == {"numbers": [13, 7, 25, 3], "target": 9}
    assert new.prompt == "Use 13 7 25 3 to make 9.\n" and new.solution == "13-7=6\n6+3=9\nAnswer: 9"


def test_a_tree_gives_each_verified_problem_once_by_its_shortest_path_and_none_held_out():
    tree = _tree()
    found = relabelled(tree, PROBLEM, TASK, set())
    found = {new.reference["target"]: (new.solution, tree.nodes[node].text) for new, node in found}
    # 9 by the first of its two 2-step paths; 2; 14 only through the wrong step 13-3=11, so never
    assert found == {9: ("13-7=6\n6+3=9\nAnswer: 9", "6+3=9\n"), 2: ("13-7=6\n6/3=2\nAnswer: 2", "6/3=2\n")}
    held_out = {problem_key([13, 7, 25, 3], 9)}
    assert [new.reference["target"] for new, _ in relabelled(tree, PROBLEM, TASK, held_out)] == [2]


def test_samples_imitate_the_relabelled_response_after_its_own_prompt_new_problems_first():
    tree = _tree()
    seen = {problem_key([13, 7, 25, 3], 9)}
    kw = {"skip_keys": set(), "encode": lambda t: TOK.encode(t, add_special_tokens=False), "tokenizer": TOK}
    samples = hindsight_samples(tree, PROBLEM, TASK, limit=1, seen=seen, max_response_tokens=160, max_len=256, **kw)
    prompt = TOK.encode("Use 13 7 25 3 to make 2.\n", add_special_tokens=False)
    assert [s.source for s in samples] == ["hindsight"] * 3 and samples[0].state_tokens == prompt
    written = samples[-1].state_tokens[len(prompt) :] + samples[-1].action_tokens[:-1]  # less the eos
    assert TOK.decode(written) == "13-7=6\n6/3=2\nAnswer: 2"
    assert samples[-1].terminal and samples[-1].action_tokens[-1] == TOK.eos_token_id
    assert {s.problem_uid for s in samples} == {f"hindsight/{problem_key([3, 7, 13, 25], 2)}"}
    assert all(s.policy_version == 3 and s.advantage == 1.0 and s.meta["hindsight_of"] == PROBLEM.uid for s in samples)
    assert problem_key([3, 7, 13, 25], 2) in seen  # chosen: the next tree prefers others
    # "13-7=6\n6+3=9\nAnswer: 9" is 22 characters and its samples 23 tokens (the eos): 23 fits, 22 does not
    fit = [
        hindsight_samples(tree, PROBLEM, TASK, limit=1, seen=set(), max_response_tokens=m, max_len=256, **kw)
        for m in (22, 23)
    ]
    assert fit[0] == [] and sum(len(s.action_tokens) for s in fit[1]) == 23
    assert hindsight_samples(tree, PROBLEM, TASK, limit=0, seen=set(), max_response_tokens=160, max_len=256, **kw) == []


def _step(uid: str, source: str, tree: str | None = None, size: int = 0) -> StepSample:
    meta = {"tree": tree, "tree_size": size} if tree else {}
    return StepSample([1], [2], [0.0], 0, 1.0, 1.0, 1.0, terminal=True, problem_uid=uid, source=source, meta=meta)


def test_relabelled_samples_reach_the_archive_and_not_the_queue_or_the_rate_limiter():
    buf = ReplayBuffer(capacity=64, solution_replay=0.5)
    tree = [_step("p", "search", "a/0", 2), _step("p", "shortcut", "a/0", 2)]
    assert buf.try_insert([*tree, _step("hindsight/x", "hindsight"), _step("hindsight/y", "hindsight")], tree="a/0")
    assert len(buf) == 2 and buf.rate_limiter.inserts == 2  # the tree's own two samples
    assert sorted(buf._solutions.problems()) == ["hindsight/x", "hindsight/y", "p"]
    assert buf.try_insert([_step("hindsight/z", "hindsight")], tree="a/1")  # an empty tree still archives
    assert len(buf) == 2 and "hindsight/z" in buf._solutions.problems()


@pytest.mark.parametrize(
    "overrides, named",
    [
        (["train.hindsight=4", "task.name=arith"], "task arith cannot relabel"),
        (["train.hindsight=4", "buffer.solution_replay=0"], "buffer.solution_replay is 0"),
    ],
)
def test_hindsight_without_a_relabelling_task_or_an_archive_is_refused(overrides, named):
    with pytest.raises(ConfigError, match=f"train.hindsight.*{named}"):
        load_config(None, overrides)
