"""MCTS over reasoning steps with PUCT (Silver et al. 2017; AlphaZero, Silver et al. 2018).

One simulation: select a path from the root by PUCT; if its leaf is terminal, back up its outcome;
otherwise expand the leaf into up to ``children`` sampled steps (duplicates merge; with
``search.distinct_children`` they are drawn without replacement instead) and back up the
leaf's value (value head or PRM), as AlphaZero backs up the network's v(s). Unvisited children start
from their own value estimate (first-play value), else from the parent's Q. Dirichlet noise is mixed
into the root priors. Virtual loss lets one tree put ``search.mcts.leaves_per_round`` distinct leaves into one
batched model call.

With a token cap (``search.mcts.token_budget``, how the scaling curve matches best-of-N's spend) every round
samples only the steps the rest of the cap pays for, so the cap holds to within one step instead of one
whole round; once it is spent, a tree with no finished answer yet completes one chain along its most
promising path, so a capped MCTS always answers (at the smallest cap it degenerates to one sampled chain).
"""

from __future__ import annotations

import random

from arbor.actors.search.expand import Scorers, SearchProc, add_steps, backup, leaf_value, step_request
from arbor.actors.search.puct import argmax, mix_dirichlet, puct_scores
from arbor.core.config import SearchConfig
from arbor.core.tree import Node, SearchTree


def select_path(
    tree: SearchTree, c_puct: float, pending: dict[int, float], closed: set[int] | None = None
) -> list[Node]:
    """Descend from the root by PUCT until an unexpanded or terminal node; ``pending`` holds virtual visits.
    With ``closed`` (``search.mcts.close_ended``) closed children are passed over, and a node whose children
    are all closed is where the path ends: it is expanded again, for steps it has not sampled yet."""
    node, path = tree.root, [tree.root]
    while node.expanded and not node.terminal:
        kids = [tree.nodes[c] for c in node.children]
        if closed is not None:
            kids = [k for k in kids if k.id not in closed]
            if not kids:
                break
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


def close_ended(leaf: Node, children: list[Node], closed: set[int]) -> None:
    """Close ``leaf``'s new terminal children (an ended step takes no more simulations), and ``leaf`` itself
    when its expansion found no step it did not have (every sample a duplicate): it is exhausted. A node
    whose children all ended is not closed: it is expanded again (:func:`select_path`)."""
    closed.update(c.id for c in children if c.terminal)
    if not children:
        closed.add(leaf.id)


def _add_virtual(pending: dict[int, float], path: list[Node], amount: float) -> None:
    for node in path:
        pending[node.id] = pending.get(node.id, 0.0) + amount


def dirichlet(rng: random.Random, alpha: float, k: int) -> list[float]:
    """A draw from Dir(alpha, ..., alpha) over k outcomes, via normalised gamma variates."""
    draws = [rng.gammavariate(alpha, 1.0) for _ in range(k)]
    total = sum(draws) or 1.0
    return [d / total for d in draws]


def prior_step_tokens(cfg: SearchConfig) -> float:
    """Tokens per step assumed before a tree has generated any: a response's token allowance spread over
    its step allowance, never more than a step may hold.

    It is prompt-independent and known before anything is sampled. ``max_step_tokens`` alone would be a
    safe upper bound but, being several times a typical step, would cut the root to one or two children at
    moderate caps; the first real step replaces this guess, and the floor of one child plus the bounded
    overshoot (see :func:`affordable_steps`) absorbs a guess that is too low.
    """
    return min(float(cfg.max_step_tokens), cfg.max_response_tokens / cfg.max_depth)


def affordable_steps(tree: SearchTree, cfg: SearchConfig, steps_sampled: int) -> int:
    """Steps the rest of ``cfg.mcts.token_budget`` pays for at the tree's mean tokens per sampled step so far
    (:func:`prior_step_tokens` before the first), never below 1: a round always makes progress, and so
    overshoots the cap by at most one step more than the estimate's error."""
    per_step = tree.tokens_generated / steps_sampled if steps_sampled else prior_step_tokens(cfg)
    left = cfg.mcts.token_budget - tree.tokens_generated
    return max(1, int(left // max(per_step, 1.0)))


def over_budget(tree: SearchTree, cfg: SearchConfig) -> bool:
    return bool(cfg.mcts.token_budget) and tree.tokens_generated >= cfg.mcts.token_budget


def complete_one_answer(tree: SearchTree, cfg: SearchConfig, scorers: Scorers) -> SearchProc:
    """Grow one chain, a single sampled step per round, from the most promising leaf until it ends.

    A capped search that spent its tokens before any response ended would otherwise have no answer.
    "Most promising" is PUCT without exploration (c_puct = 0): the best Q, else first-play value, at each
    level. The overshoot is the rest of that one chain, at most ``max_depth`` single steps.
    """
    path = select_path(tree, 0.0, {})
    while not path[-1].terminal:
        leaf = path[-1]
        results = yield [step_request(tree, leaf, 1, cfg, cfg.mcts.temperature)]
        children = add_steps(tree, leaf, results[0], cfg, scorers, merge_duplicates=True)
        backup(path, leaf_value(leaf))
        if not children:  # the backend returned no step: nothing more to grow
            return
        path.append(children[0])
    backup(path, leaf_value(path[-1]))  # the simulation that reached the answer


def mcts(tree: SearchTree, cfg: SearchConfig, scorers: Scorers, rng: random.Random) -> SearchProc:
    """Run ``cfg.mcts.simulations`` simulations on ``tree``, yielding batches of leaf expansions.

    With ``cfg.mcts.token_budget`` each round's children and leaves shrink to what the rest of the cap affords,
    the search stops once the cap is spent, and a tree left with no answer then completes one chain.
    """
    tree.kind = "mcts"
    pending: dict[int, float] = {}
    closed: set[int] | None = set() if cfg.mcts.close_ended else None
    done = 0
    steps_sampled = 0  # steps requested so far: the running tokens-per-step estimate divides by it
    while done < cfg.mcts.simulations and not over_budget(tree, cfg) and not (closed and tree.root.id in closed):
        batch: list[list[Node]] = []
        sizes: list[int] = []  # children to sample for each leaf of the batch
        steps_left = affordable_steps(tree, cfg, steps_sampled) if cfg.mcts.token_budget else -1  # -1: uncapped
        while done + len(batch) < cfg.mcts.simulations and len(batch) < cfg.mcts.leaves_per_round and steps_left != 0:
            path = select_path(tree, cfg.mcts.c_puct, pending, closed)
            leaf = path[-1]
            if closed is not None and leaf.id in closed:
                break  # the root is exhausted
            if leaf.terminal:
                backup(path, leaf_value(leaf))
                done += 1
                continue
            if any(p[-1] is leaf for p in batch):
                break  # virtual loss no longer separates the paths: send what we have
            _add_virtual(pending, path, cfg.mcts.virtual_loss)
            batch.append(path)
            sizes.append(cfg.children if steps_left < 0 else min(cfg.children, steps_left))
            if steps_left > 0:
                steps_left -= sizes[-1]
        if not batch:
            continue
        results = yield [
            step_request(tree, p[-1], k, cfg, cfg.mcts.temperature, distinct=cfg.distinct_children)
            for p, k in zip(batch, sizes)
        ]
        steps_sampled += sum(sizes)
        for path, result in zip(batch, results):
            _add_virtual(pending, path, -cfg.mcts.virtual_loss)
            leaf = path[-1]
            children = add_steps(tree, leaf, result, cfg, scorers, merge_duplicates=True)
            if leaf is tree.root and cfg.mcts.dirichlet_eps > 0 and len(children) > 1:
                noise = dirichlet(rng, cfg.mcts.dirichlet_alpha, len(children))
                for child, p in zip(
                    children, mix_dirichlet([c.prior for c in children], noise, cfg.mcts.dirichlet_eps)
                ):
                    child.prior = p
            backup(path, leaf_value(leaf))
            if closed is not None:  # each ended child backs up its outcome once, as it will not be visited again
                for child in children:
                    if child.terminal:
                        backup([*path, child], leaf_value(child))
                close_ended(leaf, children, closed)
            done += 1
    if cfg.mcts.token_budget and not any(n.terminal for n in tree.nodes):
        yield from complete_one_answer(tree, cfg, scorers)
