"""How a finished tree picks its answer: by visits, by value, by majority vote or by value-weighted vote.

At evaluation time terminal outcomes come from the value head (``search.terminal_value=value_head``),
so none of these rules ever looks at the reference answer.
"""

from __future__ import annotations

from collections.abc import Callable

from arbor.core.tree import Node, SearchTree
from arbor.reward import majority_vote

AnswerExtractor = Callable[[str], str | None]  # response text -> normalised final answer (None: no answer)


def _score(node: Node) -> float:
    if node.outcome is not None:
        return node.outcome
    return node.value_estimate if node.value_estimate is not None else 0.0


def by_value(tree: SearchTree) -> Node | None:
    """The terminal with the highest outcome (ties: the earliest)."""
    terminals = tree.terminals()
    return max(terminals, key=_score) if terminals else None


def by_visits(tree: SearchTree) -> Node | None:
    """Follow the most visited child from the root (ties: higher Q, then earliest) down to a terminal.

    Falls back to :func:`by_value` when the walk stops at a node that was never expanded.
    """
    node = tree.root
    while node.children:
        kids = [tree.nodes[c] for c in node.children]
        node = max(kids, key=lambda k: (k.visits, k.q if k.q is not None else -1.0))
    return node if node.terminal else by_value(tree)


def by_vote(tree: SearchTree, extract: AnswerExtractor, weighted: bool) -> Node | None:
    """Majority vote over the terminals' extracted answers, each vote worth 1 or its value.

    Ties go to the answer seen first; the first terminal with the winning answer is returned. Terminals
    without an answer do not vote; with no votes at all, falls back to :func:`by_value`.
    """
    terminals = tree.terminals()
    answers = [extract(tree.response(node)) for node in terminals]
    chosen = majority_vote(answers, [_score(node) for node in terminals] if weighted else None)
    return by_value(tree) if chosen is None else terminals[chosen]


def choose_answer(tree: SearchTree, method: str, extract: AnswerExtractor) -> Node | None:
    """The terminal node ``method`` picks (visits | value | vote | value_vote), or None if none ended."""
    if method == "visits":
        return by_visits(tree)
    if method == "value":
        return by_value(tree)
    if method in ("vote", "value_vote"):
        return by_vote(tree, extract, weighted=method == "value_vote")
    raise ValueError(f"unknown answer rule '{method}'; expected visits, value, vote or value_vote")
