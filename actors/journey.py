"""Journey learning: a finished search tree as one response that searches in its own chain of thought.

``train.journey.mode=journey`` turns every tree that found a right answer into a trace in the task's
journey format (``core.tasks.countdown``): up to ``train.journey.max_dead_ends`` branches the search found
to fail, each abandoned with a back line, then the successful branch, then that path once more after the
summary line, and the answer. ``shortcut`` gives the successful path alone (each tree's best path), for the
comparison. Either enters the replay buffer beside the tree's own samples, tagged with its source, and the
learner imitates it (``learner.losses.imitation_loss``): the trace was assembled, never sampled as written.

Which branches count as dead ends is read off the tree, never off an oracle: a branch ends at its first node
whose every explored completion failed (Monte-Carlo value 0), the step where the search learnt it was lost;
the walk backs out right after it. A dead end whose lines are not legal steps, or which adds nothing beyond
the state it shares with the successful path, is left out; so are dead ends that would push the trace past
``search.max_response_tokens`` (the policy must be able to write what it imitates).
"""

from __future__ import annotations

from typing import Any

from arbor.core.config import ArborConfig
from arbor.core.samples import StepSample, response_samples
from arbor.core.tasks import Problem, journey_format
from arbor.core.tree import Node, SearchTree, compute_mc_values
from arbor.reward import step_fault, verify


def _lines(tree: SearchTree, node: Node) -> list[str]:
    return [n.text.strip() for n in tree.path(node)[1:]]


def dead_ends(tree: SearchTree) -> list[Node]:
    """The first node of each failed branch: a step (not a terminal) with mc_value 0, every completion
    explored below it wrong, under a parent that still had a success below it; in the order the search made
    them. Needs ``compute_mc_values``."""
    out = []
    for node in tree.nodes[1:]:
        parent = tree.nodes[node.parent]  # type: ignore[index]
        if node.mc_value == 0.0 and (parent.mc_value or 0.0) > 0.0 and not node.terminal:
            out.append(node)
    return out


def journey_trace(tree: SearchTree, problem: Problem, max_dead_ends: int, fits) -> str | None:
    """The journey response of ``tree`` for ``problem`` (None when no leaf is right or the task has no journey
    format). ``fits(text)`` says whether a response is short enough; dead ends are dropped until it is."""
    write = journey_format(problem.task)
    best = best_leaf(tree)
    if write is None or best is None:
        return None
    path = _lines(tree, best)
    steps, answer = path[:-1], path[-1]
    branches = []
    for node in dead_ends(tree):
        if len(branches) >= max_dead_ends:
            break
        branch = _lines(tree, node)
        if step_fault(problem.task, "\n".join(branch), problem.reference) is None:
            branches.append(branch)
    while True:
        try:
            text = write(problem.reference, [*branches, steps], answer)
        except ValueError:  # the lines do not walk as the format needs (e.g. two branches with equal steps)
            text = None
        if text is not None and fits(text) and verify(problem.task, text, problem.reference):
            return text
        if not branches:
            return None
        branches.pop()


def best_leaf(tree: SearchTree) -> Node | None:
    """The right leaf with the fewest steps (the earliest found among equals), or None."""
    right = [n for n in tree.terminals() if n.outcome == 1.0]
    return min(right, key=lambda n: (n.depth, n.id)) if right else None


def trace_samples(
    tree: SearchTree, problem: Problem, cfg: ArborConfig, tokenizer: Any, max_len: int
) -> list[StepSample]:
    """The ``train.journey`` samples of a finished tree: its journey trace or its best path, as imitation
    samples after the prompt (none when the mode is off or no leaf is right). A trace must fit
    ``search.max_response_tokens`` and, after the prompt, the learner's ``max_len`` positions."""
    mode = str(cfg.train.journey.mode)
    if mode == "off":
        return []
    compute_mc_values(tree)
    limit = min(cfg.search.max_response_tokens, max_len - len(tree.prompt_tokens))

    def fits(text: str) -> bool:
        return len(tokenizer.encode(text, add_special_tokens=False)) + 1 <= limit  # + the eos it ends at

    if mode == "journey":
        text = journey_trace(tree, problem, cfg.train.journey.max_dead_ends, fits)
    else:
        best = best_leaf(tree)
        text = tree.response(best).rstrip("\n") if best is not None else None
    if text is None:
        return []
    version = max(n.policy_version for n in tree.nodes[1:])
    return response_samples(
        list(tree.prompt_tokens), text, tokenizer, version, problem_uid=tree.problem_uid, source=mode
    )
