"""The search's pure pieces by hand: PUCT scores, priors and root noise, backup, terminal steps, answer rules."""

from __future__ import annotations

import math

import pytest

from arbor.actors.search.answer import by_value, by_visits, by_vote
from arbor.actors.search.expand import backup, is_terminal_step
from arbor.actors.search.puct import argmax, mix_dirichlet, normalise_priors, puct_scores
from tests.search_toy import hand_tree


def test_puct_scores_match_hand_computation():
    # parent N = 4 -> sqrt 2; child 0: Q = 1/2, U = 1.5 * 0.6 * 2 / 3; child 1 unvisited: fpu 0.3, U = 1.5 * 0.4 * 2
    scores = puct_scores([0.6, 0.4], [1.0, 0.0], [2, 0], [0.9, 0.3], parent_visits=4, c_puct=1.5)
    assert scores == pytest.approx([0.5 + 0.6, 0.3 + 1.2])
    assert argmax(scores) == 1
    # virtual visits (value 0) lower Q and the exploration bonus of a pending child
    pending = puct_scores([0.6, 0.4], [1.0, 0.0], [2 + 1, 0], [0.9, 0.3], parent_visits=5, c_puct=1.5)
    assert pending[0] == pytest.approx(1 / 3 + 1.5 * 0.6 * math.sqrt(5) / 4)


def test_priors_are_step_probabilities_normalised_over_siblings():
    assert normalise_priors([math.log(0.2), math.log(0.6)]) == pytest.approx([0.25, 0.75])
    # very unlikely steps (sums of many token log-probs) must not underflow to 0/0
    assert normalise_priors([-2000.0, -2000.0 + math.log(3)]) == pytest.approx([0.25, 0.75])
    assert mix_dirichlet([0.25, 0.75], [1.0, 0.0], eps=0.25) == pytest.approx([0.4375, 0.5625])
    with pytest.raises(ValueError):
        mix_dirichlet([0.5, 0.5], [1.0], eps=0.25)


def test_backup_makes_q_the_mean_of_backed_up_values():
    tree = hand_tree()
    for leaf, value in ((2, 1.0), (3, 0.0), (2, 1.0)):
        backup(tree.path(tree.nodes[leaf]), value)
    assert tree.root.visits == 3 and tree.root.q == pytest.approx(2 / 3)
    assert tree.nodes[2].q == 1.0 and tree.nodes[3].q == 0.0


def test_answer_rules():
    tree = hand_tree()
    for leaf, value in ((2, 1.0), (3, 0.0), (2, 1.0), (5, 1.0)):
        backup(tree.path(tree.nodes[leaf]), value)

    def extract(response: str) -> str | None:
        return response.rsplit("Answer: ", 1)[1].strip() if "Answer: " in response else None

    assert by_visits(tree).id == 2  # root -> a (3 visits) -> a1 (2 visits)
    assert by_value(tree).id == 2  # first of the outcome-1 terminals
    assert by_vote(tree, extract, weighted=False).id == 2  # "1" has two votes, "2" one
    tree.nodes[2].outcome, tree.nodes[5].outcome, tree.nodes[3].outcome = 0.1, 0.1, 0.9
    assert by_vote(tree, extract, weighted=True).id == 3  # 0.9 for "2" beats 0.2 for "1"


def test_terminal_steps():
    assert is_terminal_step("Answer: 3\n", "step") and is_terminal_step(" Answer:3", "eos")
    assert is_terminal_step("1+2=3", "length") and is_terminal_step("1+2=3", "eos")
    assert not is_terminal_step("1+2=3\n", "step")
