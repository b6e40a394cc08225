"""What every search does around a backend call: ask for steps under a node, add them as children.

A search algorithm is a generator (``SearchProc``): it yields the step requests it needs, receives the
results in the same order, and grows its tree. One driver batches the requests of many trees into a
single backend call; running one tree alone is the same code with a batch of one tree.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass

from arbor.actors.search.backend import StepRequest, StepResult
from arbor.actors.search.puct import normalise_priors
from arbor.core.config import SearchConfig
from arbor.core.tasks.base import ANSWER_PREFIX
from arbor.core.tree import Node, SearchTree

SearchProc = Generator[list[StepRequest], list[StepResult], None]
TerminalScorer = Callable[[str], float | None]  # response -> outcome in [0, 1] (the verifier); None: no verdict
StepScorer = Callable[[str, str], float]  # (prompt, response so far) -> value in [0, 1] (a PRM)
StepCheck = Callable[[str], str | None]  # response so far -> why its steps can no longer succeed, or None
_ANSWER_TAG = ANSWER_PREFIX.strip()


@dataclass(frozen=True)
class Scorers:
    """Where values come from. ``terminal=None`` scores answers with the value head, never the reference."""

    terminal: TerminalScorer | None = None
    prm: StepScorer | None = None
    step: StepCheck | None = None  # the task's step check (search.step_checks): an illegal step scores 0 at once


def is_terminal_step(text: str, finish: str) -> bool:
    """A step ends the response when it is the answer line or generation stopped at eos or a length limit."""
    return finish in ("eos", "length") or text.strip().startswith(_ANSWER_TAG)


def backup(path: list[Node], value: float) -> None:
    """Add one visit of ``value`` to every node on ``path`` (root to leaf)."""
    for node in path:
        node.visits += 1
        node.value_sum += value


def step_request(
    tree: SearchTree, node: Node, num_samples: int, cfg: SearchConfig, temperature: float, *, distinct: bool = False
) -> StepRequest:
    """Ask for ``num_samples`` next steps under ``node``, within the step and response token limits; with
    ``distinct``, drawn without replacement and never one of ``node``'s children (actors.search.distinct)."""
    left = cfg.max_response_tokens - tree.response_tokens(node)
    known = [tree.nodes[c] for c in node.children] if distinct else []
    return StepRequest(
        segments=tree.segments(node),
        num_samples=num_samples,
        max_tokens=max(1, min(cfg.max_step_tokens, left)),
        temperature=temperature,
        distinct=distinct,
        distinct_batched=distinct and cfg.distinct_batched,
        exclude=tuple((tuple(k.token_ids), tuple(k.logprobs)) for k in known),
    )


def _terminal_outcome(tree: SearchTree, node: Node, scorers: Scorers) -> float | None:
    if scorers.terminal is not None:
        outcome = scorers.terminal(tree.response(node))
        return None if outcome is None else float(outcome)
    if node.value_estimate is None:
        raise ValueError("search.terminal_value=value_head needs a backend with a value head (or a PRM)")
    return node.value_estimate


def add_steps(
    tree: SearchTree, node: Node, result: StepResult, cfg: SearchConfig, scorers: Scorers, *, merge_duplicates: bool
) -> list[Node]:
    """Add the sampled steps of ``result`` as children of ``node``; returns the new children.

    Priors are the steps' policy probabilities normalised over the new siblings. With
    ``merge_duplicates`` (tree search), a step sampled twice becomes one child: it is the same state.
    """
    if node.value_estimate is None:
        node.value_estimate = result.prefix_value
    if node.value_estimate is None and scorers.prm is not None:  # the root, when the PRM is the only value source
        node.value_estimate = float(scorers.prm(tree.prompt, tree.response(node)))
    steps = result.steps
    if merge_duplicates:
        seen: set[tuple[int, ...]] = {tuple(tree.nodes[c].token_ids) for c in node.children}
        unique = []
        for s in steps:
            key = tuple(s.token_ids)
            if key not in seen:
                seen.add(key)
                unique.append(s)
        steps = unique
    if not steps:
        return []
    priors = normalise_priors([sum(s.logprobs) for s in steps])
    used = tree.response_tokens(node)
    children = []
    for s, prior in zip(steps, priors):
        child = tree.add_child(
            node,
            text=s.text,
            token_ids=list(s.token_ids),
            logprobs=list(s.logprobs),
            policy_version=result.policy_version,
            prior=prior,
            finish=s.finish,
            value_estimate=s.value,
        )
        child.terminal = (
            is_terminal_step(s.text, s.finish)
            or child.depth >= cfg.max_depth
            or used + len(s.token_ids) >= cfg.max_response_tokens
        )
        if scorers.prm is not None:
            child.value_estimate = float(scorers.prm(tree.prompt, tree.response(child)))
        if scorers.step is not None and not child.terminal and scorers.step(tree.response(child)) is not None:
            # every completion fails the verifier (it checks each step): a dead end, known without finishing it
            child.terminal, child.outcome = True, 0.0
            tree.pruned_steps += 1
            children.append(child)
            continue
        if child.terminal:
            child.outcome = _terminal_outcome(tree, child, scorers)
        children.append(child)
    return children


def leaf_value(node: Node) -> float:
    """The value a search backs up for a non-terminal leaf: its value-head or PRM estimate.

    A terminal the verifier could not judge (no outcome) backs up its estimate, else 0.
    """
    if node.terminal and node.outcome is not None:
        return node.outcome
    if node.terminal and node.value_estimate is None:
        return 0.0
    if node.value_estimate is None:
        raise ValueError(
            f"node {node.id} has no value estimate: tree search needs a value head or a PRM (search.leaf_value)"
        )
    return node.value_estimate
