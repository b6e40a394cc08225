"""MCTS over reasoning steps with PUCT (Silver et al. 2017; AlphaZero, Silver et al. 2018).

One simulation: select a path from the root by PUCT; if its leaf is terminal, back up its outcome;
otherwise expand the leaf into up to ``children`` sampled steps (duplicates merge) and back up the
leaf's value (value head or PRM), as AlphaZero backs up the network's v(s). Unvisited children start
from their own value estimate (first-play value), else from the parent's Q. Dirichlet noise is mixed
into the root priors. Virtual loss lets one tree put ``leaves_per_round`` distinct leaves into one
batched model call.
"""

from __future__ import annotations

import random

from actors.search.expand import Scorers, SearchProc, add_steps, leaf_value, step_request
from actors.search.puct import argmax, mix_dirichlet, puct_scores
from actors.search.tree import Node, SearchTree, backup
from core.config import SearchConfig


def select_path(tree: SearchTree, c_puct: float, pending: dict[int, float]) -> list[Node]:
    """Descend from the root by PUCT until an unexpanded or terminal node; ``pending`` holds virtual visits."""
    node, path = tree.root, [tree.root]
    while node.expanded and not node.terminal:
        kids = [tree.nodes[c] for c in node.children]
        parent_q = node.q if node.q is not None else (node.value_estimate or 0.0)
        scores = puct_scores(
            priors=[k.prior for k in kids],
            value_sums=[k.value_sum for k in kids],
            visits=[k.visits + pending.get(k.id, 0.0) for k in kids],
            first_play=[k.value_estimate if k.value_estimate is not None else parent_q for k in kids],
            parent_visits=node.visits + pending.get(node.id, 0.0),
            c_puct=c_puct,
        )
        node = kids[argmax(scores)]
        path.append(node)
    return path


def _add_virtual(pending: dict[int, float], path: list[Node], amount: float) -> None:
    for node in path:
        pending[node.id] = pending.get(node.id, 0.0) + amount


def dirichlet(rng: random.Random, alpha: float, k: int) -> list[float]:
    """A draw from Dir(alpha, ..., alpha) over k outcomes, via normalised gamma variates."""
    draws = [rng.gammavariate(alpha, 1.0) for _ in range(k)]
    total = sum(draws) or 1.0
    return [d / total for d in draws]


def mcts(tree: SearchTree, cfg: SearchConfig, scorers: Scorers, rng: random.Random) -> SearchProc:
    """Run ``cfg.simulations`` simulations on ``tree`` (fewer once ``cfg.token_budget`` tokens are generated),
    yielding batches of leaf expansions."""
    tree.kind = "mcts"
    pending: dict[int, float] = {}
    done = 0
    while done < cfg.simulations and not (cfg.token_budget and tree.tokens_generated >= cfg.token_budget):
        batch: list[list[Node]] = []
        while done + len(batch) < cfg.simulations and len(batch) < cfg.leaves_per_round:
            path = select_path(tree, cfg.c_puct, pending)
            leaf = path[-1]
            if leaf.terminal:
                backup(path, leaf_value(leaf))
                done += 1
                continue
            if any(p[-1] is leaf for p in batch):
                break  # virtual loss no longer separates the paths: send what we have
            _add_virtual(pending, path, cfg.virtual_loss)
            batch.append(path)
        if not batch:
            continue
        results = yield [step_request(tree, p[-1], cfg.children, cfg, cfg.temperature) for p in batch]
        for path, result in zip(batch, results):
            _add_virtual(pending, path, -cfg.virtual_loss)
            leaf = path[-1]
            children = add_steps(tree, leaf, result, cfg, scorers, merge_duplicates=True)
            if leaf is tree.root and cfg.dirichlet_eps > 0 and len(children) > 1:
                noise = dirichlet(rng, cfg.dirichlet_alpha, len(children))
                for child, p in zip(children, mix_dirichlet([c.prior for c in children], noise, cfg.dirichlet_eps)):
                    child.prior = p
            backup(path, leaf_value(leaf))
            done += 1
