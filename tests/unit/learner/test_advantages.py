"""Advantages from trees: learner samples with their tokens, behaviour log-probs and values; GRPO scaling."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest

from arbor.core.config import load_config
from arbor.core.errors import ConfigError
from arbor.core.samples import StepSample
from arbor.core.tree import SearchTree
from arbor.learner.advantages import scale_advantages, tree_to_samples
from tests.conftest import DEFAULT_CONFIG
from tests.search_toy import hand_tree


def test_samples_carry_tokens_logprobs_and_advantages():
    samples = tree_to_samples(hand_tree())
    by_node = {s.meta["node"]: s for s in samples}
    assert set(by_node) == {1, 2, 3, 5}  # edges into subtrees without a scored leaf carry no signal
    s = by_node[2]
    assert s.state_tokens == [9, 8, 1, 0] and s.action_tokens == [5] and s.behaviour_logprobs == [-0.3]
    assert s.advantage == pytest.approx(1.0 - 0.5) and s.value_target == 1.0 and s.state_value == 0.5
    assert s.terminal and s.reward == 1.0
    assert by_node[1].advantage == pytest.approx(0.5 - 2 / 3) and by_node[1].reward == 0.0
    # mixing in the value head moves V toward its estimate
    mixed = {s.meta["node"]: s for s in tree_to_samples(hand_tree(), value_head_weight=0.5)}
    assert mixed[2].state_value == pytest.approx(0.5 * 0.5 + 0.5 * 0.4)
    assert StepSample.from_json(json.loads(json.dumps(s.to_json()))) == s
    with pytest.raises(ValueError, match="log-prob"):
        StepSample([1], [2, 3], [-0.1], 0, 0.0, 0.0, 0.0)


def test_tree_std_scaling_divides_advantages_by_the_spread_of_leaf_outcomes():
    # leaves 1, 0, 1: mean 2/3, population std sqrt(2)/3 (GRPO's group std over the tree's answers)
    tree = hand_tree()
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


def test_visit_shares_are_visits_over_the_siblings_where_a_node_branched():
    tree = hand_tree()  # root -> a -> {a1, a2, a3}; root -> b; root -> c
    visits = {1: 6, 2: 3, 3: 1, 4: 0, 5: 3, 6: 1}
    for node_id, v in visits.items():
        tree.nodes[node_id].visits = v
    shares = {s.meta["node"]: s.visit_share for s in tree_to_samples(tree)}
    assert shares[1] == pytest.approx(6 / 10) and shares[5] == pytest.approx(3 / 10)  # a and b of root's 10
    assert shares[2] == pytest.approx(3 / 4) and shares[3] == pytest.approx(1 / 4)  # a1, a2 of a's 4
    unvisited = hand_tree()
    assert all(s.visit_share is None for s in tree_to_samples(unvisited))  # best-of-N, beam: nothing visited
