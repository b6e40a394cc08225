"""MCTS, beam search and best-of-N on a toy task whose best step is known, through the batching driver."""

from __future__ import annotations

import random

import pytest

from arbor.actors.search.driver import run_searches
from arbor.actors.search.expand import Scorers
from arbor.actors.search.mcts import mcts
from arbor.actors.search.scaling import scaling_curve, scaling_table
from arbor.core.config import SearchConfig
from arbor.core.tasks.base import Problem
from arbor.core.tree import SearchTree
from arbor.learner.advantages import tree_to_samples
from tests.search_toy import BAD, GOOD, MEH, PROMPT, RIGHT, STEPS, FixedLogitPolicy, outcome, search_cfg, true_value
from tests.search_toy import leaf_mean as _leaf_mean

VERIFIER = Scorers(terminal=outcome)


def _problems(n: int) -> list[Problem]:
    # task "arith" only for answer extraction ("Answer: 1" -> "1"); outcomes come from the toy verifier
    return [Problem("arith", f"toy/{i}", f"toy/{i}", PROMPT, {"answer": 1}) for i in range(n)]


def _cfg(**kw) -> SearchConfig:
    return search_cfg(**kw)


def _first_step(tree: SearchTree, node_id: int) -> int:
    return tree.nodes[node_id].token_ids[0]


def test_mcts_concentrates_visits_on_the_best_step_against_the_prior():
    cfg = _cfg(simulations=40, children=20, c_puct=1.0)
    trees = run_searches(FixedLogitPolicy(seed=0), _problems(10), cfg, lambda p: VERIFIER)
    with_good = 0
    for tree in trees:
        kids = {_first_step(tree, c): tree.nodes[c] for c in tree.root.children}
        assert tree.root.visits == cfg.mcts.simulations
        if GOOD not in kids:
            continue  # the policy never proposed it (p 0.79^20 = 1%): nothing to find
        with_good += 1
        share = kids[GOOD].visits / sum(k.visits for k in kids.values())
        assert max(kids.values(), key=lambda k: k.visits) is kids[GOOD]
        assert share > 0.5 > 0.21  # well above the policy's own preference for it
        assert kids[GOOD].q > max(k.q for a, k in kids.items() if a != GOOD)
        assert tree.response(tree.nodes[tree.answer_node]) == STEPS[GOOD] + STEPS[RIGHT]  # answer by visits
    assert with_good >= 8


def test_node_values_equal_the_mean_of_their_leaves_in_every_search():
    for kind in ("mcts", "beam", "best_of_n"):
        cfg = _cfg(kind=kind, simulations=24, children=3, beam_width=6, num_samples=6)
        for tree in run_searches(FixedLogitPolicy(seed=1), _problems(3), cfg, lambda p: VERIFIER):
            for node in tree.nodes:
                assert node.mc_value == pytest.approx(_leaf_mean(tree, node.id)), (kind, node.id)
            if kind != "mcts":  # each finished response is backed up once, so Q is that same mean
                assert tree.root.q == pytest.approx(tree.root.mc_value)


def test_chain_equals_one_branch_tree():
    """A sampled chain (best-of-1) and MCTS with one child per expansion build the same branch and samples."""
    problems = _problems(1)
    chain = run_searches(FixedLogitPolicy(seed=3), problems, _cfg(kind="best_of_n", num_samples=1), lambda p: VERIFIER)
    tree = run_searches(FixedLogitPolicy(seed=3), problems, _cfg(simulations=6, children=1), lambda p: VERIFIER)
    chain_nodes, tree_nodes = chain[0].nodes, tree[0].nodes
    assert len(tree_nodes) == len(chain_nodes) == 3 and all(len(n.children) <= 1 for n in tree_nodes)
    assert [(n.token_ids, n.logprobs) for n in chain_nodes] == [(n.token_ids, n.logprobs) for n in tree_nodes]
    fields = ("state_tokens", "action_tokens", "behaviour_logprobs", "advantage", "value_target", "reward")
    a, b = tree_to_samples(chain[0]), tree_to_samples(tree[0])
    assert [[getattr(s, f) for f in fields] for s in a] == [[getattr(s, f) for f in fields] for s in b]
    assert all(s.advantage == 0.0 for s in a)  # on one branch every V is the outcome


def test_best_of_n_root_value_is_the_group_mean_baseline():
    cfg = _cfg(kind="best_of_n", num_samples=8, answer_by="vote")
    tree = run_searches(FixedLogitPolicy(seed=4), _problems(1), cfg, lambda p: VERIFIER)[0]
    finals = [n for n in tree.terminals()]
    assert len(tree.root.children) == 8 and len(finals) == 8
    mean = sum(n.outcome for n in finals) / 8
    assert tree.root.mc_value == pytest.approx(mean)
    firsts = [s for s in tree_to_samples(tree) if s.meta["depth"] == 1]
    for s in firsts:  # first step's advantage: that chain's outcome minus the group mean (GRPO-like)
        leaf = tree.terminals(tree.nodes[s.meta["node"]])[0]
        assert s.advantage == pytest.approx(leaf.outcome - mean)
    # majority vote picks the most common answer among the eight
    answers = [tree.response(n).strip().rsplit(" ", 1)[1] for n in finals]
    chosen = tree.response(tree.nodes[tree.answer_node]).strip().rsplit(" ", 1)[1]
    assert answers.count(chosen) == max(answers.count(a) for a in set(answers))


def test_value_guided_beam_keeps_the_best_step_and_answers_by_value():
    """With informative values (Snell et al.'s PRM role), the beam drops bad/meh and ends right."""
    cfg = _cfg(kind="beam", beam_width=8, children=8, answer_by="value", terminal_value="value_head")
    trees = run_searches(FixedLogitPolicy(seed=5, informative_values=True), _problems(6), cfg, lambda p: Scorers())
    found = 0
    for tree in trees:
        firsts = {_first_step(tree, c) for c in tree.root.children}
        expanded = {_first_step(tree, c) for c in tree.root.children if tree.nodes[c].children}
        if GOOD in firsts:
            found += 1
            assert expanded == {GOOD}  # 8 // 8 = 1 slot, and good has the highest value (0.73 vs 0)
            assert tree.response(tree.nodes[tree.answer_node]).endswith(STEPS[RIGHT])
        # evaluation scoring never consulted the verifier: terminal outcomes are value estimates
        for n in tree.terminals():
            assert n.outcome == true_value(tuple(t for m in tree.path(n)[1:] for t in m.token_ids))
    assert found >= 4


def test_greedy_follows_the_argmax():
    tree = run_searches(FixedLogitPolicy(seed=0), _problems(1), _cfg(kind="greedy"), lambda p: VERIFIER)[0]
    assert tree.kind == "greedy" and tree.response(tree.nodes[-1]) == STEPS[BAD] + STEPS[4]


def test_virtual_loss_sends_distinct_leaves_and_the_driver_batches_trees():
    cfg = _cfg(simulations=16, children=3, leaves_per_round=4, trees_in_flight=4)
    policy = FixedLogitPolicy(seed=6)
    trees = run_searches(policy, _problems(8), cfg, lambda p: VERIFIER)
    assert len(trees) == 8 and [t.problem_uid for t in trees] == [f"toy/{i}" for i in range(8)]
    assert max(policy.calls) > 4  # one call carried several leaves of several trees
    assert all(t.root.visits == cfg.mcts.simulations for t in trees)
    for tree in trees:  # an expanded node was expanded exactly once: no leaf went out twice
        assert all(len(tree.nodes[c].children) <= 3 for c in range(len(tree.nodes)))
    # the same 8 searches one leaf and one tree at a time need many more calls for the same simulations
    one = FixedLogitPolicy(seed=6)
    run_searches(one, _problems(8), search_cfg(cfg, leaves_per_round=1, trees_in_flight=1), lambda p: VERIFIER)
    assert len(one.calls) > 2 * len(policy.calls)


def test_the_driver_reads_a_stream_lazily_and_refills_each_finished_trees_place():
    # closed trees end after different numbers of rounds, so fixed batches would leave slots empty
    cfg = _cfg(simulations=8, children=2, leaves_per_round=2, close_ended=True, trees_in_flight=3)
    pulled, finished = [], []

    def stream():
        for p in _problems(9):
            pulled.append(p.uid)
            yield p

    def on_finished(i, tree):
        finished.append((i, tree.problem_uid))
        assert len(pulled) - len(finished) <= cfg.trees_in_flight  # no problem is taken before a slot is free

    policy = FixedLogitPolicy(seed=8)
    assert run_searches(policy, stream(), cfg, lambda p: VERIFIER, on_finished=on_finished, collect=False) == []
    assert sorted(finished) == [(i, f"toy/{i}") for i in range(9)]
    # every flying tree sends at least one request, so a call narrower than the batch has an empty slot: that
    # happens only once the stream has run out (batches of 3 searched one after another give 3, 6, 5, 3, 2, 2,
    # 1, 3, ...)
    narrow = [k for k, width in enumerate(policy.calls) if width < cfg.trees_in_flight]
    assert narrow and all(w < cfg.trees_in_flight for w in policy.calls[narrow[0] :]), policy.calls
    kept = run_searches(FixedLogitPolicy(seed=8), iter(_problems(9)), cfg, lambda p: VERIFIER)
    assert [t.problem_uid for t in kept] == [f"toy/{i}" for i in range(9)]  # a stream keeps input order too


def test_the_driver_searches_each_problem_with_the_settings_cfg_for_gives_it():
    # close_ended=False: an ended step takes revisits, so a tree's root visits are its own simulation budget
    cfg = _cfg(simulations=2, children=2, leaves_per_round=1, close_ended=False, trees_in_flight=4)
    big = search_cfg(cfg, simulations=12)
    trees = run_searches(
        FixedLogitPolicy(seed=3),
        _problems(6),
        cfg,
        lambda p: VERIFIER,
        cfg_for=lambda p: big if int(p.uid.split("/")[1]) % 2 else cfg,
    )
    alone = [
        run_searches(FixedLogitPolicy(seed=3), [p], big if i % 2 else cfg, lambda p: VERIFIER)[0]
        for i, p in enumerate(_problems(6))
    ]
    small, large = [t.root.visits for t in trees[0::2]], [t.root.visits for t in trees[1::2]]
    assert small == [2, 2, 2] and large == [12, 12, 12], (small, large)
    assert [t.root.visits for t in trees] == [t.root.visits for t in alone]  # each as its own settings search it


def test_dirichlet_noise_changes_only_root_priors():
    cfg = _cfg(simulations=3, children=12, dirichlet_eps=0.5)
    quiet = search_cfg(cfg, dirichlet_eps=0.0)
    noisy_tree, plain_tree = SearchTree("t", PROMPT, [1]), SearchTree("t", PROMPT, [1])
    for tree, c in ((noisy_tree, cfg), (plain_tree, quiet)):
        proc, policy = mcts(tree, c, VERIFIER, random.Random(0)), FixedLogitPolicy(seed=7)
        try:
            requests = next(proc)
            while True:
                requests = proc.send(policy.continue_steps(requests))
        except StopIteration:
            pass
    noisy = [noisy_tree.nodes[c].prior for c in noisy_tree.root.children]
    plain = [plain_tree.nodes[c].prior for c in plain_tree.root.children]
    assert sum(noisy) == pytest.approx(1.0) and noisy != pytest.approx(plain)
    deeper = [n.prior for n in noisy_tree.nodes if n.depth == 2]
    assert deeper == [n.prior for n in plain_tree.nodes if n.depth == 2]
    assert {_first_step(noisy_tree, c) for c in noisy_tree.root.children} <= {GOOD, BAD, MEH}


def test_evaluation_never_scores_with_the_verifier_and_a_prm_can_value_leaves():
    calls: list[str] = []

    def spy_verifier(response: str) -> float:
        calls.append(response)
        return outcome(response)

    eval_cfg = _cfg(kind="best_of_n", num_samples=4, terminal_value="value_head", answer_by="value_vote")
    trees = run_searches(FixedLogitPolicy(seed=8), _problems(2), eval_cfg, lambda p: Scorers(terminal=spy_verifier))
    assert calls == [] and all(n.outcome == 0.5 for t in trees for n in t.terminals())  # the value estimates

    def prm(prompt: str, response: str) -> float:  # a process reward that knows the good first step
        return 1.0 if response.startswith(STEPS[GOOD]) else 0.0

    prm_cfg = _cfg(kind="beam", beam_width=8, children=8, leaf_value="prm")
    with pytest.raises(ValueError, match="search.leaf_value=prm"):
        run_searches(FixedLogitPolicy(seed=9), _problems(1), prm_cfg, lambda p: VERIFIER)
    tree = run_searches(FixedLogitPolicy(seed=9), _problems(1), prm_cfg, lambda p: Scorers(outcome, prm))[0]
    assert {_first_step(tree, c) for c in tree.root.children if tree.nodes[c].children} <= {GOOD}
    assert all(tree.nodes[c].value_estimate == prm(PROMPT, tree.nodes[c].text) for c in tree.root.children)


def test_scaling_curve_compares_kinds_at_equal_token_budgets():
    cfg = _cfg(budgets=[1, 6], children=3, answer_by="value", leaves_per_round=2)
    points = scaling_curve(
        FixedLogitPolicy(seed=10, informative_values=True), _problems(12), cfg, judge=lambda p, r: outcome(r) == 1.0
    )
    got = {(p.kind, p.budget): p for p in points}
    assert set(got) == {("greedy", 1)} | {(k, b) for k in ("best_of_n", "beam", "mcts") for b in (1, 6)}
    assert got["greedy", 1].accuracy == 0.0  # the argmax first step is "bad"
    for b in (1, 6):
        bon, tree = got["best_of_n", b], got["mcts", b]
        # MCTS samples only what the rest of best-of-N's (rounded) spend affords, overshooting by at most one
        # one-token step, or stops earlier when this small toy tree is exhausted
        assert 0 < tree.generated_tokens <= bon.generated_tokens + 0.5 + 1
        assert tree.accuracy > 0.0  # every capped tree answers, even at one chain's spend
    assert got["mcts", 6].accuracy > got["greedy", 1].accuracy
    assert got["best_of_n", 6].accuracy > got["best_of_n", 1].accuracy  # more chains, more chances
    assert len(scaling_table(points).splitlines()) == 1 + len(points)


@pytest.mark.parametrize("kind", ["mcts", "best_of_n"])
def test_a_step_the_task_rejects_ends_its_branch_at_once_with_outcome_zero(kind):
    """Scorers.step (search.step_checks): an illegal step is a terminal of outcome 0, never expanded, and
    the search spends its calls elsewhere; without the check the same steps are continued."""
    checked = Scorers(terminal=outcome, step=lambda response: "bad step" if "bad" in response else None)
    cfg = _cfg(kind=kind, simulations=24, num_samples=8, children=3, max_depth=3)
    for scorers in (checked, VERIFIER):
        (tree,) = run_searches(FixedLogitPolicy(seed=1), _problems(1), cfg, lambda p, s=scorers: s)
        bad = [n for n in tree.nodes[1:] if n.depth == 1 and _first_step(tree, n.id) == BAD]
        assert bad, "the policy's favourite first step was never sampled"
        if scorers is checked:
            assert all(n.terminal and n.outcome == 0.0 and not n.children for n in bad)
            assert tree.pruned_steps == len(bad)
        else:
            assert any(n.children for n in bad) and tree.pruned_steps == 0


def test_close_ended_mcts_never_revisits_an_ended_step_and_stops_when_nothing_is_left():
    """search.mcts.close_ended: each terminal backs up its outcome once and is never selected again, a node
    whose steps all ended is expanded again for new ones, and a tree with nothing new left to sample stops
    before its simulation budget."""
    cfg = _cfg(kind="mcts", simulations=40, children=3, max_depth=3)
    (plain,) = run_searches(FixedLogitPolicy(seed=2), _problems(1), cfg, lambda p: VERIFIER)
    closed_cfg = search_cfg(cfg, close_ended=True)
    (tree,) = run_searches(FixedLogitPolicy(seed=2), _problems(1), closed_cfg, lambda p: VERIFIER)
    terminals = [n for n in tree.nodes if n.terminal]
    assert terminals and all(n.visits == 1 for n in terminals)
    assert max(n.visits for n in plain.nodes if n.terminal) > 1  # without it, ended steps are selected again
    assert any(n.outcome == 1.0 for n in terminals)  # the right answer is still found
    assert plain.root.visits >= 40 > tree.root.visits  # it stopped once every branch had ended
    for node in tree.nodes:  # visits and values stay consistent: each node's visits cover its subtree's backups
        if node.children:
            assert node.visits >= sum(tree.nodes[c].visits for c in node.children)
