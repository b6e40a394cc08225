"""MCTS under a token cap (``search.mcts.token_budget``) on the fixed-logit toy, where every step is one token.

The scaling curve gives MCTS best-of-N's spend; these pin down that it spends about that much, no more
than one step over once its per-step estimate is right, and always returns an answer.
"""

from __future__ import annotations

from arbor.actors.search.driver import run_searches
from arbor.actors.search.expand import Scorers
from arbor.actors.search.mcts import prior_step_tokens
from arbor.core.config import SearchConfig
from arbor.core.tasks.base import Problem
from tests.search_toy import PROMPT, FixedLogitPolicy, outcome, search_cfg

VERIFIER = Scorers(terminal=outcome)
# the toy's steps are one token: with these limits the prior tokens-per-step estimate is exact from the start
ONE_TOKEN_STEPS = dict(max_step_tokens=1, max_response_tokens=8, max_depth=8)


def _problems(n: int) -> list[Problem]:
    return [Problem("arith", f"toy/{i}", f"toy/{i}", PROMPT, {"answer": 1}) for i in range(n)]


def _cfg(**kw) -> SearchConfig:
    return search_cfg(**kw)


def _chain_tokens() -> int:
    chain = run_searches(FixedLogitPolicy(seed=0), _problems(1), _cfg(kind="best_of_n", num_samples=1))
    return chain[0].tokens_generated


def test_prior_tokens_per_step_spreads_the_response_allowance_within_one_step():
    assert prior_step_tokens(_cfg(max_step_tokens=48, max_response_tokens=96, max_depth=8)) == 12.0
    assert prior_step_tokens(_cfg(max_step_tokens=4, max_response_tokens=96, max_depth=8)) == 4.0
    assert prior_step_tokens(_cfg(**ONE_TOKEN_STEPS)) == 1.0


def test_a_cap_of_one_chain_answers_within_one_step_of_the_chain():
    chain = _chain_tokens()
    assert chain == 2  # a first step and an answer
    for limits in ({}, ONE_TOKEN_STEPS):  # the default prior (12 tokens a step) and an exact one
        cfg = _cfg(children=4, leaves_per_round=4, token_budget=chain, **limits)
        for tree in run_searches(FixedLogitPolicy(seed=11), _problems(8), cfg, lambda p: VERIFIER):
            assert tree.answer_node is not None and tree.nodes[tree.answer_node].terminal
            assert tree.tokens_generated <= chain + 1, limits


def test_a_cap_below_one_chain_completes_a_single_chain():
    """The cap is spent by the first step; the search still finishes the one chain it has: best-of-1."""
    cfg = _cfg(children=4, leaves_per_round=4, token_budget=1)
    for tree in run_searches(FixedLogitPolicy(seed=12), _problems(6), cfg, lambda p: VERIFIER):
        assert tree.tokens_generated == 2 and len(tree.nodes) == 3
        assert all(len(n.children) <= 1 for n in tree.nodes)
        assert tree.answer_node == 2 and tree.nodes[2].visits == 1  # answer_by=visits finds it


def test_the_completing_chain_follows_the_most_valuable_step():
    """Three first steps spend the cap before any answer; the chain that completes goes down the best one."""
    cfg = _cfg(children=4, leaves_per_round=4, token_budget=3, terminal_value="value_head", **ONE_TOKEN_STEPS)
    trees = run_searches(FixedLogitPolicy(seed=13, informative_values=True), _problems(8), cfg, lambda p: Scorers())
    for tree in trees:
        firsts = [tree.nodes[c] for c in tree.root.children]
        assert tree.tokens_generated == 4  # the 3 affordable first steps (duplicates merge) and one answer step
        assert [n.expanded for n in firsts].count(True) == 1
        best = max(firsts, key=lambda n: n.value_estimate)
        assert best.expanded and tree.nodes[tree.answer_node].parent == best.id


def test_caps_of_several_chains_hold_to_within_one_step():
    """Children and leaves per round shrink to what the rest of the cap affords: with an exact per-step
    estimate a round never sends more than the cap pays for, bar the one step every round may take."""
    chain = _chain_tokens()
    for chains in (3, 5, 8):
        cap = chains * chain
        cfg = _cfg(children=4, leaves_per_round=4, simulations=64, token_budget=cap, **ONE_TOKEN_STEPS)
        trees = run_searches(FixedLogitPolicy(seed=14), _problems(8), cfg, lambda p: VERIFIER)
        for tree in trees:
            assert tree.answer_node is not None
            assert tree.tokens_generated <= cap + 1, (cap, tree.tokens_generated)
        # the cap still leaves room to branch (four samples of the root can all be "bad", p 0.58^4 = 11%)
        assert sum(len(t.root.children) >= 2 for t in trees) >= 6


def test_caps_hold_to_within_one_round_with_the_default_prior():
    """With the default prior (12 tokens a step, far off the toy's 1) the first round samples one step; the
    running estimate then takes over, so the spend still stays within one round of single steps of the cap."""
    chain = _chain_tokens()
    cfg0 = _cfg(children=4, leaves_per_round=4, simulations=64)
    for chains in (3, 8):
        cfg = search_cfg(cfg0, token_budget=chains * chain)
        for tree in run_searches(FixedLogitPolicy(seed=15), _problems(8), cfg, lambda p: VERIFIER):
            assert tree.answer_node is not None
            assert tree.tokens_generated <= cfg.mcts.token_budget + cfg.mcts.leaves_per_round
