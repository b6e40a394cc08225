"""Value-guided beam search over steps (Snell et al. 2024, "Scaling LLM Test-Time Compute Optimally
can be More Effective than Scaling Model Parameters", section 5).

Sample N first steps; score every open candidate with the value head or a PRM; keep the top N / M and
expand each M ways; repeat until N responses have finished or no candidate is open. Finished responses
back up their outcome, so every node's Q is the mean outcome of the responses under it.
"""

from __future__ import annotations

from arbor.actors.search.expand import Scorers, SearchProc, add_steps, backup, leaf_value, step_request
from arbor.core.config import SearchConfig
from arbor.core.tree import SearchTree


def beam_search(tree: SearchTree, cfg: SearchConfig, scorers: Scorers) -> SearchProc:
    """Beam of ``cfg.beam.width`` candidates, ``cfg.children`` per kept node."""
    tree.kind = "beam"
    keep = max(1, cfg.beam.width // cfg.children)
    frontier, per_node = [tree.root], cfg.beam.width  # the root alone proposes all N first steps
    finished = 0
    while frontier:
        results = yield [step_request(tree, n, per_node, cfg, cfg.temperature) for n in frontier]
        per_node = cfg.children
        candidates = []
        for node, result in zip(frontier, results):
            candidates += add_steps(tree, node, result, cfg, scorers, merge_duplicates=True)
        for c in candidates:
            if c.terminal:
                backup(tree.path(c), leaf_value(c))
                finished += 1
        open_ = sorted((c for c in candidates if not c.terminal), key=leaf_value, reverse=True)
        frontier = open_[:keep] if finished < cfg.beam.width else []
