"""Test-time scaling: held-out accuracy against search budget for greedy, best-of-N, beam and MCTS.

A budget b means N = b chains for best-of-N and a beam of width b; MCTS gets the same number of
generated tokens per problem that best-of-N spent at that budget (``search.mcts.token_budget``), so the two
are compared at equal token cost. Searches never see the reference (``terminal_value=value_head``);
only the chosen answer is scored, afterwards, by the verifier. Each point records what it cost:
generated tokens and model calls per problem, and tokens forwarded per generated token.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from arbor.actors.search.answer import choose_answer
from arbor.actors.search.backend import StepBackend
from arbor.actors.search.driver import evaluation_scorers, run_searches
from arbor.actors.search.expand import Scorers
from arbor.core.config import SearchConfig
from arbor.core.tasks.base import Problem
from arbor.core.tree import SearchTree, search_stats
from arbor.reward import extract_answer, verify

KINDS = ("greedy", "best_of_n", "beam", "mcts")


@dataclass(frozen=True)
class ScalingPoint:
    kind: str  # greedy | best_of_n | beam | mcts
    budget: int  # N for best-of-N, beam width, and best-of-N's token spend for MCTS
    accuracy: float  # share of problems whose chosen answer verifies
    generated_tokens: float  # per problem
    model_calls: float  # per problem
    forward_tokens_per_generated_token: float


Judge = Callable[[Problem, str], bool]  # (problem, response) -> right


def verifier_judge(problem: Problem, response: str) -> bool:
    return verify(problem.task, response, problem.reference)


def accuracy(trees: Sequence[SearchTree], problems: Sequence[Problem], judge: Judge = verifier_judge) -> float:
    """Share of trees whose chosen answer the judge accepts (a tree with no answer counts as wrong)."""
    right = 0
    for tree, problem in zip(trees, problems):
        if tree.answer_node is not None:
            right += judge(problem, tree.response(tree.nodes[tree.answer_node]))
    return right / max(len(problems), 1)


def coverage(trees: Sequence[SearchTree]) -> dict[str, float]:
    """What a batch of verifier-scored searches found: the share of problems with at least one correct
    answer (``any_correct``, what RL can learn from), scored answers per tree, and their accuracy."""
    outcomes = [[n.outcome for n in t.terminals() if n.outcome is not None] for t in trees]
    scored = [o for tree in outcomes for o in tree]
    n = max(len(trees), 1)
    return {
        "any_correct": sum(any(o == 1.0 for o in tree) for tree in outcomes) / n,
        "answers_per_tree": len(scored) / n,
        "answer_accuracy": sum(scored) / max(len(scored), 1),
    }


def accuracy_by_rule(
    trees: Sequence[SearchTree], problems: Sequence[Problem], rules: Sequence[str], judge: Judge = verifier_judge
) -> dict[str, float]:
    """Accuracy of the same trees under each answer rule (no new search needed); leaves each tree's
    ``answer_node`` at the last rule's choice."""
    out = {}
    for rule in rules:
        for tree, problem in zip(trees, problems):
            node = choose_answer(tree, rule, lambda r, kind=problem.task: extract_answer(kind, r))
            tree.answer_node = node.id if node is not None else None
        out[rule] = accuracy(trees, problems, judge)
    return out


def _point(kind: str, budget: int, trees: list[SearchTree], problems: Sequence[Problem], judge: Judge) -> ScalingPoint:
    stats = search_stats(trees)
    return ScalingPoint(
        kind=kind,
        budget=budget,
        accuracy=accuracy(trees, problems, judge),
        generated_tokens=stats["search/tokens_generated_per_tree"],
        model_calls=stats["search/model_calls_per_tree"],
        forward_tokens_per_generated_token=stats["search/forward_tokens_per_generated_token"],
    )


def budget_config(cfg: SearchConfig, kind: str, budget: int, token_budget: int = 0) -> SearchConfig:
    """``cfg`` set up for ``kind`` at ``budget`` (evaluation: no root noise, value-head terminals)."""
    common = dict(kind=kind, terminal_value="value_head", mcts=dataclasses.replace(cfg.mcts, dirichlet_eps=0.0))
    if kind == "best_of_n":
        return dataclasses.replace(cfg, **common, best_of_n=dataclasses.replace(cfg.best_of_n, num_samples=budget))
    if kind == "beam":
        beam = dataclasses.replace(cfg.beam, width=budget)
        return dataclasses.replace(cfg, **common, beam=beam, children=min(cfg.children, budget))
    if kind == "mcts":  # each expansion costs >= 1 token, so the cap, not this count, ends an expanding search
        sims = max(cfg.mcts.simulations, budget * cfg.max_depth, token_budget)
        common["mcts"] = dataclasses.replace(common["mcts"], token_budget=token_budget, simulations=sims)
    return dataclasses.replace(cfg, **common)


def scaling_curve(
    backend: StepBackend,
    problems: Sequence[Problem],
    cfg: SearchConfig,
    kinds: Sequence[str] = KINDS,
    judge: Judge = verifier_judge,
    scorers_for: Callable[[Problem], Scorers] = evaluation_scorers,
) -> list[ScalingPoint]:
    """Accuracy and cost of each kind at each of ``cfg.budgets`` (greedy once, at budget 1).

    Every kind picks its answer by ``cfg.answer_by``. ``scorers_for`` gives each problem its value sources
    (never the verifier: the value head by default, or a PRM for ``search.leaf_value=prm``).
    """
    points: list[ScalingPoint] = []
    if "greedy" in kinds:
        trees = run_searches(backend, problems, budget_config(cfg, "greedy", 1), scorers_for)
        points.append(_point("greedy", 1, trees, problems, judge))
    for budget in cfg.budgets:
        spent = 0
        for kind in ("best_of_n", "beam", "mcts"):
            if kind not in kinds:
                continue
            if kind == "mcts":
                if not spent:  # MCTS needs best-of-N's spend at this budget to match it
                    trees = run_searches(backend, problems, budget_config(cfg, "best_of_n", budget), scorers_for)
                    spent = max(1, round(search_stats(trees)["search/tokens_generated_per_tree"]))
            trees = run_searches(backend, problems, budget_config(cfg, kind, budget, spent), scorers_for)
            points.append(_point(kind, budget, trees, problems, judge))
            if kind == "best_of_n":
                spent = max(1, round(points[-1].generated_tokens))
    return points


def scaling_table(points: Sequence[ScalingPoint]) -> str:
    """A plain-text table of the curve, one row per (kind, budget)."""
    head = f"{'kind':<10} {'budget':>6} {'accuracy':>8} {'gen tok':>9} {'calls':>7} {'fwd/gen':>7}"
    rows = [
        f"{p.kind:<10} {p.budget:>6} {p.accuracy:>8.3f} {p.generated_tokens:>9.1f} {p.model_calls:>7.1f} "
        f"{p.forward_tokens_per_generated_token:>7.3f}"
        for p in points
    ]
    return "\n".join([head, *rows])
