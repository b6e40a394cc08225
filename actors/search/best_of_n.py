"""Best-of-N: N independent chains under one root (greedy decoding is best-of-1 at temperature 0).

Each chain is extended one step per round until it ends; a finished chain backs up its outcome, so a
node's Q equals the mean outcome of the chains through it. The answer is then chosen by majority vote,
value-weighted vote or value (``actors.search.answer``).
"""

from __future__ import annotations

from actors.search.expand import Scorers, SearchProc, add_steps, leaf_value, step_request
from actors.search.tree import SearchTree, backup
from core.config import SearchConfig


def best_of_n(tree: SearchTree, cfg: SearchConfig, scorers: Scorers, n: int, temperature: float) -> SearchProc:
    """Sample ``n`` chains at ``temperature``; no duplicate merging, so each chain stays its own branch."""
    tree.kind = "best_of_n" if temperature > 0 or n > 1 else "greedy"
    results = yield [step_request(tree, tree.root, n, cfg, temperature)]
    open_ = add_steps(tree, tree.root, results[0], cfg, scorers, merge_duplicates=False)
    while open_:
        for node in open_:
            if node.terminal:
                backup(tree.path(node), leaf_value(node))
        open_ = [node for node in open_ if not node.terminal]
        if not open_:
            return
        results = yield [step_request(tree, node, 1, cfg, temperature) for node in open_]
        grown = [add_steps(tree, node, r, cfg, scorers, merge_duplicates=False) for node, r in zip(open_, results)]
        open_ = [children[0] for children in grown if children]  # no step back: that chain ends unscored
