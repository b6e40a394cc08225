"""The driver: advance many search trees together, one batched backend call per round.

Every search algorithm is a generator that yields the step requests it needs (MCTS yields several
leaves per tree, kept apart by virtual loss). Each round the driver gathers the requests of all trees in
flight, makes one ``continue_steps`` call, hands every tree its results and books the tree's cost
(tokens forwarded, tokens generated, model calls). A finished tree gets its Monte-Carlo values and
its answer, and the next problem takes its place (continuous batching).
"""

from __future__ import annotations

import dataclasses
import logging
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from arbor.actors.search.answer import AnswerExtractor, choose_answer
from arbor.actors.search.backend import StepBackend, StepRequest
from arbor.actors.search.beam import beam_search
from arbor.actors.search.best_of_n import best_of_n, shepherd
from arbor.actors.search.expand import Scorers, SearchProc
from arbor.actors.search.mcts import mcts
from arbor.core.config import SearchConfig
from arbor.core.tasks.base import Problem
from arbor.core.tree import SearchTree, compute_mc_values
from arbor.reward import check, extract_answer, has_step_check, step_fault

log = logging.getLogger("arbor.search")


def training_scorers(problem: Problem) -> Scorers:
    """Training rollouts score terminal responses with the verifier (the reference answer is known).

    A response the verifier crashes on gets no outcome, so no sample is built from it (it is skipped, not
    scored 0); the crash is counted in ``reward.verifier_counts`` and logged with the problem's uid, which
    for data tasks names the file and line.
    """

    def outcome(response: str) -> float | None:
        verdict = check(problem.task, response, problem.reference)
        if verdict.crashed:
            log.warning("skipping a response to %s: %s", problem.uid, verdict.reason)
            return None
        return float(verdict.correct)

    return Scorers(terminal=outcome)


def evaluation_scorers(problem: Problem) -> Scorers:
    """Evaluation never sees the reference: terminal responses are valued by the value head."""
    return Scorers()


def make_search(tree: SearchTree, cfg: SearchConfig, scorers: Scorers, rng: random.Random) -> SearchProc:
    """The search generator ``cfg.kind`` names, over ``tree``."""
    if cfg.kind == "mcts":
        return mcts(tree, cfg, scorers, rng)
    if cfg.kind == "beam":
        return beam_search(tree, cfg, scorers)
    if cfg.kind == "best_of_n":
        return best_of_n(tree, cfg, scorers, cfg.best_of_n.num_samples, cfg.temperature)
    if cfg.kind == "greedy":
        return best_of_n(tree, cfg, scorers, 1, 0.0)
    if cfg.kind == "shepherd":
        return shepherd(tree, cfg, scorers)
    raise ValueError(f"unknown search kind '{cfg.kind}'")


@dataclass
class _Flight:
    index: int  # position of the problem in the input
    tree: SearchTree
    proc: SearchProc
    requests: list[StepRequest]
    extract: AnswerExtractor


def scorers_by_config(cfg: SearchConfig, scorers: Scorers) -> Scorers:
    """Enforce the config on the value sources: with ``terminal_value=value_head`` no terminal scorer (and so
    no reference answer) reaches the search; ``leaf_value=prm`` requires a PRM."""
    if cfg.terminal_value == "value_head":
        scorers = dataclasses.replace(scorers, terminal=None)
    if cfg.leaf_value == "prm" and scorers.prm is None:
        raise ValueError("search.leaf_value=prm needs a process reward model (Scorers.prm)")
    return scorers


def run_searches(
    backend: StepBackend,
    problems: Iterable[Problem],
    cfg: SearchConfig,
    scorers_for: Callable[[Problem], Scorers] = training_scorers,
    between_rounds: Callable[[], None] | None = None,
    on_finished: Callable[[int, SearchTree], None] | None = None,
    collect: bool = True,
    cfg_for: Callable[[Problem], SearchConfig] | None = None,
) -> list[SearchTree]:
    """Search every problem with ``cfg.kind``, ``cfg.trees_in_flight`` trees at a time; trees in input order.

    ``problems`` may be any iterable, read lazily: a finished tree's place in the batch goes to the next
    problem at once, so model calls stay ``trees_in_flight`` trees wide until the input runs out (a rollout
    actor passes its endless shard). ``collect=False`` keeps no finished tree and returns ``[]`` (trees go
    to ``on_finished`` only), so an endless stream holds only the trees in flight.

    ``scorers_for`` gives each problem its value sources (the verifier by default, for training rollouts);
    ``cfg.terminal_value=value_head`` overrides it so that evaluation never sees the reference.
    ``between_rounds`` runs before every batched call: where a rollout actor pulls new weights into the
    backend, so a long search picks them up without stopping (each node records the version it came from).
    ``on_finished(index, tree)`` runs as each tree completes (where a rollout actor streams it to the buffer).
    ``cfg_for(problem)`` gives one problem its own search settings (a larger budget for a problem that failed
    before); the batch width stays ``cfg.trees_in_flight``.
    """
    pending = enumerate(problems)
    exhausted = False
    flying: list[_Flight] = []
    out: dict[int, SearchTree] = {}
    launched = 0

    def finish(f: _Flight) -> None:
        compute_mc_values(f.tree)
        chosen = choose_answer(f.tree, cfg.answer_by, f.extract)
        f.tree.answer_node = chosen.id if chosen is not None else None
        if collect:
            out[f.index] = f.tree
        if on_finished is not None:
            on_finished(f.index, f.tree)
        prompt = tuple(f.tree.prompt_tokens)
        if not any(tuple(g.tree.prompt_tokens) == prompt for g in flying if g is not f):
            backend.release(prompt)

    def launch(index: int, problem: Problem) -> None:
        mine = cfg_for(problem) if cfg_for is not None else cfg
        tree = SearchTree(problem.uid, problem.prompt, backend.encode(problem.prompt))
        rng = random.Random(f"{mine.seed}/{problem.uid}")
        scorers = scorers_by_config(mine, scorers_for(problem))
        if mine.step_checks and has_step_check(problem.task):  # the problem's statement only, never its answer
            scorers = dataclasses.replace(scorers, step=lambda r, p=problem: step_fault(p.task, r, p.reference))
        proc = make_search(tree, mine, scorers, rng)
        f = _Flight(index, tree, proc, [], lambda response, kind=problem.task: extract_answer(kind, response))
        try:
            f.requests = next(proc)
        except StopIteration:
            finish(f)
            return
        flying.append(f)

    while True:
        while not exhausted and len(flying) < cfg.trees_in_flight:
            item = next(pending, None)
            if item is None:
                exhausted = True
            else:
                launched += 1
                launch(*item)
        if not flying:
            if exhausted:
                break
            continue
        if between_rounds is not None:
            between_rounds()
        results = backend.continue_steps([r for f in flying for r in f.requests])
        start = 0
        for f in list(flying):
            mine = results[start : start + len(f.requests)]
            start += len(f.requests)
            f.tree.tokens_forwarded += sum(r.tokens_forwarded for r in mine)
            f.tree.tokens_generated += sum(r.tokens_generated for r in mine)
            f.tree.model_calls += max((r.model_calls for r in mine), default=0)
            try:
                f.requests = f.proc.send(mine)
            except StopIteration:
                flying.remove(f)
                finish(f)
    if not collect:
        return []
    missing = [i for i in range(launched) if i not in out]
    if missing:  # callers pair trees with problems by position; a gap would misalign every score after it
        raise RuntimeError(f"search finished without a tree for problems {missing[:10]}")
    return [out[i] for i in range(launched)]
