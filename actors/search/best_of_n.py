"""Best-of-N: N independent chains under one root (greedy decoding is best-of-1 at temperature 0); and
Math-Shepherd completion sampling, which grows more chains from every step of those.

Each chain is extended one step per round until it ends; a finished chain backs up its outcome, so a
node's Q equals the mean outcome of the chains through it. The answer is then chosen by majority vote,
value-weighted vote or value (``actors.search.answer``).
"""

from __future__ import annotations

from collections.abc import Sequence

from arbor.actors.search.expand import Scorers, SearchProc, add_steps, backup, leaf_value, step_request
from arbor.core.config import SearchConfig
from arbor.core.tree import Node, SearchTree


def grow_chains(
    tree: SearchTree, starts: Sequence[tuple[Node, int]], cfg: SearchConfig, scorers: Scorers, temperature: float
) -> SearchProc:
    """Sample k first steps under each (node, k) of ``starts``, then extend every chain one step per round
    until it ends; no duplicate merging, so each chain stays its own branch."""
    results = yield [step_request(tree, node, k, cfg, temperature) for node, k in starts]
    open_: list[Node] = []
    for (node, _), result in zip(starts, results):
        open_ += add_steps(tree, node, result, cfg, scorers, merge_duplicates=False)
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


def best_of_n(tree: SearchTree, cfg: SearchConfig, scorers: Scorers, n: int, temperature: float) -> SearchProc:
    """Sample ``n`` chains at ``temperature``."""
    tree.kind = "best_of_n" if temperature > 0 or n > 1 else "greedy"
    yield from grow_chains(tree, [(tree.root, n)], cfg, scorers, temperature)


def shepherd(tree: SearchTree, cfg: SearchConfig, scorers: Scorers) -> SearchProc:
    """Math-Shepherd completions (Wang et al. 2024): ``cfg.best_of_n.num_samples`` chains from the root, then
    ``cfg.children`` more completions from every unfinished step on them, all at ``cfg.temperature``.

    Every step of the first chains then has ``children`` + 1 on-policy completions below it, so the share
    that ends right (its Monte-Carlo value, ``reward.prm_labels.step_labels``) is an unbiased estimate of
    P(correct | step), which a tree grown by MCTS's selection does not give.
    """
    yield from grow_chains(tree, [(tree.root, cfg.best_of_n.num_samples)], cfg, scorers, cfg.temperature)
    tree.kind = "shepherd"
    steps = [n for n in tree.nodes[1:] if not n.terminal]
    if steps and cfg.children:
        yield from grow_chains(tree, [(n, cfg.children) for n in steps], cfg, scorers, cfg.temperature)
