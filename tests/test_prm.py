"""Process reward labels on hand-built trees, and dense step rewards in the learner samples."""

from __future__ import annotations

import dataclasses

import pytest

from actors.search import Scorers, run_searches
from actors.search.tree import SearchTree, tree_to_samples
from core.config import SearchConfig
from core.tasks.base import Problem
from reward.prm_labels import dense_step_rewards, sibling_pairs, step_labels
from tests.search_toy import PROMPT, FixedLogitPolicy, outcome


def _tree() -> SearchTree:
    """root -> a -> {a1 (right), a2 (wrong)}; root -> b -> b1 (wrong); root -> c (never expanded)."""
    tree = SearchTree("p/0", "Q?\n", [9, 8])
    a = tree.add_child(tree.root, text="a\n", token_ids=[1, 0], logprobs=[-0.1, -0.2])
    b = tree.add_child(tree.root, text="b\n", token_ids=[2, 0], logprobs=[-0.3, -0.4])
    tree.add_child(a, text="Answer: 1\n", token_ids=[5], logprobs=[-0.5], terminal=True, outcome=1.0)
    tree.add_child(a, text="Answer: 2\n", token_ids=[6], logprobs=[-0.6], terminal=True, outcome=0.0)
    tree.add_child(b, text="Answer: 3\n", token_ids=[7], logprobs=[-0.7], terminal=True, outcome=0.0)
    tree.add_child(tree.root, text="c\n", token_ids=[3, 0], logprobs=[-0.8, -0.9])
    return tree  # ids: root 0, a 1, b 2, a1 3, a2 4, b1 5, c 6


# --- labels -----------------------------------------------------------------------------------------------


def test_math_shepherd_labels_are_the_share_of_correct_completions_below():
    labels = {s.node: (s.soft, s.hard, s.completions) for s in step_labels(_tree())}
    assert labels == {
        0: (1 / 3, 1.0, 3),  # the prompt: one of three completions is right
        1: (0.5, 1.0, 2),  # a: one of its two completions is right, so its hard label is 1
        2: (0.0, 0.0, 1),  # b: its only completion is wrong
        3: (1.0, 1.0, 1),
        4: (0.0, 0.0, 1),
        5: (0.0, 0.0, 1),
    }  # c has no completion below it: no label at all
    assert [s.node for s in step_labels(_tree(), min_completions=2)] == [0, 1]


def test_sibling_pairs_prefer_a_step_that_can_succeed_over_one_that_cannot():
    assert sibling_pairs(_tree()) == [(1, 2), (3, 4)]  # c is no rejected sibling: it was never scored
    assert sibling_pairs(_tree(), min_completions=2) == []  # b has only one completion


def test_dense_step_rewards_by_value_and_by_progress():
    scores = [0.4, 0.6, 0.2, 0.9, 0.1, 0.0, None]
    value = dense_step_rewards(_tree(), scores, 0.5, "value")
    assert value == pytest.approx([0.0, 0.3, 0.1, 0.45, 0.05, 0.0, 0.0])
    progress = dense_step_rewards(_tree(), scores, 0.5, "progress")
    assert progress == pytest.approx([0.0, 0.1, -0.1, 0.15, -0.25, -0.1, 0.0])
    # progress telescopes: along root -> a -> a1 the rewards sum to 0.5 x (score(a1) - score(root))
    assert progress[1] + progress[3] == pytest.approx(0.5 * (0.9 - 0.4))
    with pytest.raises(ValueError, match="progress"):
        dense_step_rewards(_tree(), scores, 0.5, "length")


def test_tree_samples_with_dense_rewards_match_hand_computation():
    r = [0.0, 0.1, -0.1, 0.15, -0.25, -0.1, 0.0]
    # returns per leaf from the root: a1 1 + .1 + .15 = 1.25, a2 0 + .1 - .25 = -.15, b1 0 - .1 - .1 = -.2
    # V(root) = .9 / 3 = .3; V(a) = mean(1.15, -.25) = .45; V(b) = -.1; leaves: their outcomes
    samples = {s.meta["node"]: s for s in tree_to_samples(_tree(), global_advantage=1.0, step_rewards=r)}
    assert set(samples) == {1, 2, 3, 4, 5}  # c: no completion below, no sample
    a, a1, b1 = samples[1], samples[3], samples[5]
    assert (a.state_value, a.value_target, a.reward) == pytest.approx((0.3, 0.45, 0.1))
    assert a.advantage == pytest.approx(0.1 + 0.45 - 0.3 + (0.1 + 0.45 - 0.3))  # local + global
    assert (a1.reward, a1.value_target) == pytest.approx((1.15, 1.0))
    assert a1.advantage == pytest.approx((0.15 + 1.0 - 0.45) + (1.25 - 0.3))  # global: the path's return - V(root)
    assert b1.advantage == pytest.approx((-0.1 + 0.0 + 0.1) + (-0.2 - 0.3))


@pytest.mark.parametrize(("weight", "global_advantage"), [(0.0, 0.0), (0.5, 1.0)])
def test_zero_step_rewards_change_nothing(weight: float, global_advantage: float):
    trees = run_searches(
        FixedLogitPolicy(seed=4),
        [Problem("arith", f"toy/{i}", f"toy/{i}", PROMPT, {"answer": 1}) for i in range(6)],
        dataclasses.replace(SearchConfig(), simulations=12, children=3),
        lambda p: Scorers(terminal=outcome),
    )
    for tree in trees:
        plain = tree_to_samples(tree, weight, global_advantage)
        zeros = tree_to_samples(tree, weight, global_advantage, step_rewards=[0.0] * len(tree.nodes))
        assert plain and zeros == plain
