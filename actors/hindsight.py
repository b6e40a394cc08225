"""Hindsight relabelling (``train.hindsight``): the paths of a search tree that reached another number, as
solutions of the problems that ask for that number.

Andrychowicz et al. 2017, "Hindsight Experience Replay": a trajectory that missed its goal is a success for
the goal it reached. A Countdown path of legal steps whose last result is 17 solves "use the same numbers to
make 17", so a tree that failed its own target may still hold solved problems (about one new one a tree on
the default, docs/training-notes.md). The task says
which relabelled problems it would itself draw (``task.hindsight``), the verifier judges each relabelled
response as it judges any other, and no path is relabelled into a problem no learning side may read (the
held-out set, the SFT pool: ``problems_to_skip``).

The responses are imitated (``learner.losses.imitation_loss``), from the self-imitation archive only
(``ARCHIVE_ONLY_SOURCES``): no policy sampled them after that prompt, so there is no behaviour probability to
correct with, as for a journey trace.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import Any

from arbor.core.samples import StepSample, response_samples
from arbor.core.tasks import Problem, Task
from arbor.core.tree import SearchTree
from arbor.reward import verify


def relabelled(tree: SearchTree, problem: Problem, task: Task, skip_keys: Collection[str]) -> list[tuple[Problem, int]]:
    """Each problem some path of ``tree`` solves in hindsight, with the node its path ends at: one per problem
    (the path with the fewest steps, the earliest among equals), none in ``skip_keys``, each verified."""
    relabel = getattr(task, "hindsight", None)
    if relabel is None:
        return []
    found: dict[str, tuple[Problem, int]] = {}
    for node in sorted(tree.nodes[1:], key=lambda n: (n.depth, n.id)):
        if node.terminal:
            continue
        lines = [n.text.strip() for n in tree.path(node)[1:]]
        new = relabel(problem, lines)
        if new is None or new.key in skip_keys or new.key in found:
            continue
        if verify(new.task, new.solution, new.reference):
            found[new.key] = (new, node.id)
    return list(found.values())


def hindsight_samples(
    tree: SearchTree,
    problem: Problem,
    task: Task,
    *,
    limit: int,
    skip_keys: Collection[str],
    seen: set[str],
    encode: Callable[[str], list[int]],
    tokenizer: Any,
    max_response_tokens: int,
    max_len: int,
) -> list[StepSample]:
    """Imitation samples (source ``hindsight``) of up to ``limit`` relabelled problems of ``tree``, problems
    not in ``seen`` first (the keys this actor relabelled before; the chosen ones are added). A response
    must fit ``max_response_tokens`` and, after its prompt, the learner's ``max_len`` positions: the policy
    must be able to write what it imitates."""
    if limit <= 0:
        return []
    found = relabelled(tree, problem, task, skip_keys)
    found.sort(key=lambda pair: pair[0].key in seen)  # stable: fewest steps first within each group
    out: list[StepSample] = []
    taken = 0
    for new, node_id in found:
        if taken >= limit:
            break
        state = list(encode(new.prompt))
        room = min(max_response_tokens, max_len - len(state))
        if len(tokenizer.encode(new.solution, add_special_tokens=False)) + 1 > room:  # + the eos it ends at
            continue
        version = max(n.policy_version for n in tree.path(tree.nodes[node_id])[1:])
        out += response_samples(
            state,
            new.solution,
            tokenizer,
            version,
            problem_uid=new.uid,
            source="hindsight",
            meta={"hindsight_of": problem.uid},
        )
        seen.add(new.key)
        taken += 1
    return out
