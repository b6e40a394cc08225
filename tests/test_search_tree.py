"""Search records and pure math: PUCT by hand, tree values, learner samples, JSON, answer rules, config."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest

from arbor.actors.search.answer import by_value, by_visits, by_vote
from arbor.actors.search.expand import backup, is_terminal_step
from arbor.actors.search.puct import argmax, mix_dirichlet, normalise_priors, puct_scores
from arbor.core.config import load_config
from arbor.core.errors import ConfigError
from arbor.core.samples import StepSample
from arbor.core.tree import SearchTree, compute_mc_values, search_stats
from arbor.learner.advantages import scale_advantages, tree_to_samples
from tests.conftest import DEFAULT_CONFIG
from tests.search_toy import leaf_mean as _leaf_mean


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


def _hand_tree() -> SearchTree:
    """root -> a -> {a1 (1), a2 (0), a3 (open)}; root -> b (1); root -> c (open, no terminal below)."""
    tree = SearchTree("p/0", "Q?\n", [9, 8])
    root = tree.root
    a = tree.add_child(root, text="a\n", token_ids=[1, 0], logprobs=[-0.1, -0.2], value_estimate=0.4)
    tree.add_child(a, text="Answer: 1\n", token_ids=[5], logprobs=[-0.3], terminal=True, outcome=1.0)
    tree.add_child(a, text="Answer: 2\n", token_ids=[6], logprobs=[-0.4], terminal=True, outcome=0.0)
    tree.add_child(a, text="x\n", token_ids=[7], logprobs=[-0.5])
    tree.add_child(root, text="Answer: 1\n", token_ids=[5], logprobs=[-0.6], terminal=True, outcome=1.0)
    tree.add_child(root, text="c\n", token_ids=[3], logprobs=[-0.7])
    return tree


def test_node_value_is_mean_of_its_leaves():
    tree = _hand_tree()
    compute_mc_values(tree)
    assert [n.mc_value for n in tree.nodes] == [2 / 3, 0.5, 1.0, 0.0, None, 1.0, None]
    assert all(n.mc_value == _leaf_mean(tree, n.id) for n in tree.nodes)


def test_samples_carry_tokens_logprobs_and_advantages():
    samples = tree_to_samples(_hand_tree())
    by_node = {s.meta["node"]: s for s in samples}
    assert set(by_node) == {1, 2, 3, 5}  # edges into subtrees without a scored leaf carry no signal
    s = by_node[2]
    assert s.state_tokens == [9, 8, 1, 0] and s.action_tokens == [5] and s.behaviour_logprobs == [-0.3]
    assert s.advantage == pytest.approx(1.0 - 0.5) and s.value_target == 1.0 and s.state_value == 0.5
    assert s.terminal and s.reward == 1.0
    assert by_node[1].advantage == pytest.approx(0.5 - 2 / 3) and by_node[1].reward == 0.0
    # mixing in the value head moves V toward its estimate
    mixed = {s.meta["node"]: s for s in tree_to_samples(_hand_tree(), value_head_weight=0.5)}
    assert mixed[2].state_value == pytest.approx(0.5 * 0.5 + 0.5 * 0.4)
    assert StepSample.from_json(json.loads(json.dumps(s.to_json()))) == s
    with pytest.raises(ValueError, match="log-prob"):
        StepSample([1], [2, 3], [-0.1], 0, 0.0, 0.0, 0.0)


def test_tree_std_scaling_divides_advantages_by_the_spread_of_leaf_outcomes():
    # leaves 1, 0, 1: mean 2/3, population std sqrt(2)/3 (GRPO's group std over the tree's answers)
    tree = _hand_tree()
    plain = tree_to_samples(tree)
    scaled = scale_advantages(tree, plain, "tree_std", eps=0.0)
    std = math.sqrt(2) / 3
    assert [s.advantage for s in scaled] == pytest.approx([s.advantage / std for s in plain])
    assert [s.advantage for s in scale_advantages(tree, plain, "tree_std")] == pytest.approx(
        [s.advantage / (std + 1e-4) for s in plain]
    )
    assert [dataclasses.replace(s, advantage=0.0) for s in scaled] == [
        dataclasses.replace(s, advantage=0.0) for s in plain
    ]  # only the advantage changes
    # all leaves alike: left as they are, even where the value head makes advantages nonzero
    same = SearchTree("p/1", "Q?\n", [9])
    for token, estimate in ((5, 0.9), (6, 0.1)):
        same.add_child(
            same.root,
            text="A\n",
            token_ids=[token],
            logprobs=[-0.1],
            value_estimate=estimate,
            terminal=True,
            outcome=1.0,
        )
    mixed = tree_to_samples(same, value_head_weight=0.5)
    assert any(s.advantage != 0.0 for s in mixed)
    assert scale_advantages(same, mixed, "tree_std") == mixed
    assert scale_advantages(tree, plain, "none") == plain
    with pytest.raises(ConfigError, match="train.advantage_scale"):
        load_config(DEFAULT_CONFIG, ["train.advantage_scale=group"])


def test_tree_json_round_trip():
    tree = _hand_tree()
    backup(tree.path(tree.nodes[2]), 1.0)
    compute_mc_values(tree)
    again = SearchTree.from_json(json.loads(tree.dumps()))
    assert again == tree
    assert again.response(again.nodes[2]) == "a\nAnswer: 1\n"
    assert again.segments(again.nodes[2]) == ((9, 8), (1, 0), (5,))


def test_backup_makes_q_the_mean_of_backed_up_values():
    tree = _hand_tree()
    for leaf, value in ((2, 1.0), (3, 0.0), (2, 1.0)):
        backup(tree.path(tree.nodes[leaf]), value)
    assert tree.root.visits == 3 and tree.root.q == pytest.approx(2 / 3)
    assert tree.nodes[2].q == 1.0 and tree.nodes[3].q == 0.0


def test_answer_rules():
    tree = _hand_tree()
    for leaf, value in ((2, 1.0), (3, 0.0), (2, 1.0), (5, 1.0)):
        backup(tree.path(tree.nodes[leaf]), value)

    def extract(response: str) -> str | None:
        return response.rsplit("Answer: ", 1)[1].strip() if "Answer: " in response else None

    assert by_visits(tree).id == 2  # root -> a (3 visits) -> a1 (2 visits)
    assert by_value(tree).id == 2  # first of the outcome-1 terminals
    assert by_vote(tree, extract, weighted=False).id == 2  # "1" has two votes, "2" one
    tree.nodes[2].outcome, tree.nodes[5].outcome, tree.nodes[3].outcome = 0.1, 0.1, 0.9
    assert by_vote(tree, extract, weighted=True).id == 3  # 0.9 for "2" beats 0.2 for "1"


def test_search_stats():
    a, b = _hand_tree(), _hand_tree()
    a.tokens_generated, a.tokens_forwarded, a.model_calls = 10, 12, 4
    b.tokens_generated, b.tokens_forwarded, b.model_calls = 30, 32, 6
    stats = search_stats([a, b])
    assert stats["search/forward_tokens_per_generated_token"] == pytest.approx(44 / 40)
    assert stats["search/nodes_per_tree"] == 7 and stats["search/max_depth"] == 2
    assert stats["search/terminals_per_tree"] == 3 and stats["search/model_calls_per_tree"] == 5


def test_terminal_steps():
    assert is_terminal_step("Answer: 3\n", "step") and is_terminal_step(" Answer:3", "eos")
    assert is_terminal_step("1+2=3", "length") and is_terminal_step("1+2=3", "eos")
    assert not is_terminal_step("1+2=3\n", "step")


@pytest.mark.parametrize(
    "override, key",
    [
        ("search.mcts.simulations=0", "search.mcts.simulations"),
        ("search.children=0", "search.children"),
        ("search.beam.width=0", "search.beam.width"),
        ("search.best_of_n.num_samples=0", "search.best_of_n.num_samples"),
        ("search.max_response_tokens=8", "search.max_response_tokens"),  # below one step (max_step_tokens 48)
        ("search.budgets=[4,0]", "search.budgets"),
        ("search.kind=dfs", "search.kind"),
        ("search.mcts.dirichlet_eps=1.5", "search.mcts.dirichlet_eps"),
        ("search.mcts.c_puct=-1", "search.mcts.c_puct"),
        ("search.mcts.simulations=many", "search.mcts.simulations"),
    ],
)
def test_bad_search_config_names_the_key(override: str, key: str):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config(DEFAULT_CONFIG, [override])


def test_search_config_defaults_load():
    cfg = load_config(DEFAULT_CONFIG, ["search.kind=beam", "search.beam.width=8", "search.children=2"])
    assert cfg.search.kind == "beam" and cfg.search.beam.width == 8
