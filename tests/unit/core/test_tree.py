"""The search-tree record: Monte-Carlo node values, JSON round trip, cost statistics."""

from __future__ import annotations

import json

import pytest

from arbor.actors.search.expand import backup
from arbor.core.tree import SearchTree, compute_mc_values, search_stats
from tests.search_toy import hand_tree
from tests.search_toy import leaf_mean as _leaf_mean


def test_node_value_is_mean_of_its_leaves():
    tree = hand_tree()
    compute_mc_values(tree)
    assert [n.mc_value for n in tree.nodes] == [2 / 3, 0.5, 1.0, 0.0, None, 1.0, None]
    assert all(n.mc_value == _leaf_mean(tree, n.id) for n in tree.nodes)


def test_tree_json_round_trip():
    tree = hand_tree()
    backup(tree.path(tree.nodes[2]), 1.0)
    compute_mc_values(tree)
    again = SearchTree.from_json(json.loads(tree.dumps()))
    assert again == tree
    assert again.response(again.nodes[2]) == "a\nAnswer: 1\n"
    assert again.segments(again.nodes[2]) == ((9, 8), (1, 0), (5,))


def test_search_stats():
    a, b = hand_tree(), hand_tree()
    a.tokens_generated, a.tokens_forwarded, a.model_calls = 10, 12, 4
    b.tokens_generated, b.tokens_forwarded, b.model_calls = 30, 32, 6
    stats = search_stats([a, b])
    assert stats["search/forward_tokens_per_generated_token"] == pytest.approx(44 / 40)
    assert stats["search/nodes_per_tree"] == 7 and stats["search/max_depth"] == 2
    assert stats["search/terminals_per_tree"] == 3 and stats["search/model_calls_per_tree"] == 5
