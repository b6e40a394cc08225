"""Advantages from search trees: the step samples the learner trains on, with their values and advantages.

Node values follow TreeRL / SPO-tree: V(n) is the mean outcome of the scored terminal leaves under n, read
off the tree (``arbor.core.tree.compute_mc_values``), optionally mixed with the value head's estimate; a
step's advantage is V(child) - V(parent), plus TreeRL's global term, plus process rewards when a PRM gives
them. ``train.advantage_scale`` then optionally scales each tree's advantages (GRPO's group scaling).
Everything here is pure: trees in, :class:`~arbor.core.samples.StepSample` lists out.

Rollout actors do not import this module (actors and learner never import each other): the launcher hands
them :func:`tree_samples`, bound to the ``train`` section, as the function that turns a finished tree into
samples.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence

from arbor.core.config import TrainConfig
from arbor.core.samples import StepSample
from arbor.core.tree import Node, SearchTree, completion_stats, compute_mc_values


def dense_mc_values(tree: SearchTree, step_rewards: Sequence[float]) -> list[float | None]:
    """Per node: the mean, over the scored terminal leaves below it, of the outcome plus the step rewards
    on the way down to that leaf (None where no scored leaf lies below). All-zero rewards give ``mc_value``."""
    total, count = completion_stats(tree, step_rewards)
    return [t / c if c else None for t, c in zip(total, count)]


def _mix(mc_value: float | None, estimate: float | None, value_head_weight: float) -> float | None:
    if mc_value is None:
        return None
    if value_head_weight and estimate is not None:
        return (1.0 - value_head_weight) * mc_value + value_head_weight * estimate
    return mc_value


def node_value(node: Node, value_head_weight: float = 0.0) -> float | None:
    """V(n) for the learner: the MC value, optionally mixed with the value head's estimate."""
    return _mix(node.mc_value, node.value_estimate, value_head_weight)


def visit_share(tree: SearchTree, parent: Node, child: Node) -> float | None:
    """The search's visits to ``child`` over all of ``parent``'s children's (MCTS's policy target), or None
    where the parent did not branch or nothing was visited (best-of-N, beam)."""
    if len(parent.children) < 2:
        return None
    total = sum(tree.nodes[c].visits for c in parent.children)
    return child.visits / total if total > 0 else None


def tree_to_samples(
    tree: SearchTree,
    value_head_weight: float = 0.0,
    global_advantage: float = 0.0,
    step_rewards: Sequence[float] | None = None,
) -> list[StepSample]:
    """One learner sample per edge whose endpoints both have a value.

    The advantage is the local V(child) - V(parent), plus ``global_advantage`` times V(child) - V(root)
    (TreeRL, Hou et al. 2025: the global term credits every step of a path by how it ends relative to the
    problem's mean, where the local term credits only branch points).

    Edges into subtrees with no scored terminal carry no Monte-Carlo signal and are left out. A chain
    is a one-branch tree: every V on it equals its outcome, so its advantages are 0 unless siblings
    (other samples of the same problem under a shared root) give the root a different mean.

    ``step_rewards`` (per node id, the process reward r of the step into it, e.g. from
    ``reward.prm_labels.dense_step_rewards``) makes a path's return its outcome plus the r of its steps:
    V(n) is then the mean return below n (:func:`dense_mc_values`), a step's reward is r plus the outcome
    when it ends the response, its local advantage r + V(child) - V(parent) and its global term counts
    the r from the root down to the child. None (the default) leaves every number exactly as without it.
    """
    compute_mc_values(tree)
    if step_rewards is None:
        values = [node_value(n, value_head_weight) for n in tree.nodes]
    else:
        dense = dense_mc_values(tree, step_rewards)
        values = [_mix(v, n.value_estimate, value_head_weight) for v, n in zip(dense, tree.nodes)]
        gained = [0.0] * len(tree.nodes)  # step rewards from the root down to each node
        for node in tree.nodes[1:]:
            gained[node.id] = gained[node.parent] + step_rewards[node.id]  # type: ignore[index]
    v_root = values[0]
    samples: list[StepSample] = []
    for child in tree.nodes[1:]:
        parent = tree.nodes[child.parent]  # type: ignore[index]
        v_parent, v_child = values[parent.id], values[child.id]
        if v_parent is None or v_child is None:
            continue
        state = [t for n in tree.path(parent) for t in n.token_ids]
        reward = child.outcome if child.terminal and child.outcome is not None else 0.0
        advantage = v_child - v_parent + (global_advantage * (v_child - v_root) if v_root is not None else 0.0)
        if step_rewards is not None:
            reward += step_rewards[child.id]
            advantage += step_rewards[child.id] + (global_advantage * gained[child.id] if v_root is not None else 0.0)
        samples.append(
            StepSample(
                state_tokens=state,
                action_tokens=list(child.token_ids),
                behaviour_logprobs=list(child.logprobs),
                policy_version=child.policy_version,
                advantage=advantage,
                value_target=v_child,
                state_value=v_parent,
                reward=reward,
                terminal=child.terminal,
                problem_uid=tree.problem_uid,
                meta={"kind": tree.kind, "node": child.id, "parent": parent.id, "depth": child.depth},
                visit_share=visit_share(tree, parent, child),
            )
        )
    return samples


def scale_advantages(tree: SearchTree, samples: list[StepSample], mode: str, eps: float = 1e-4) -> list[StepSample]:
    """``train.advantage_scale`` applied to one tree's samples: "none" leaves them as they are; "tree_std" is
    GRPO's group scaling, every advantage divided by the standard deviation of the tree's scored leaf
    outcomes (plus ``eps``), so a rarely solved problem's success weighs as much as an often solved one's.
    A tree whose leaves all score alike is left as it is: its outcome advantages are 0, and what the value
    head or process rewards add must not be divided by ``eps``.
    """
    if mode == "none":
        return samples
    if mode != "tree_std":
        raise ValueError(f"unknown advantage scale {mode!r}; expected none or tree_std")
    outcomes = [n.outcome for n in tree.terminals() if n.outcome is not None]
    mean = sum(outcomes) / max(len(outcomes), 1)
    std = math.sqrt(sum((o - mean) ** 2 for o in outcomes) / max(len(outcomes), 1))
    if std == 0.0:
        return samples
    return [dataclasses.replace(s, advantage=s.advantage / (std + eps)) for s in samples]


def tree_samples(tree: SearchTree, cfg: TrainConfig, step_rewards: Sequence[float] | None = None) -> list[StepSample]:
    """A finished tree's learner samples under the ``train`` section: :func:`tree_to_samples` with
    ``train.value_head_weight`` and ``train.global_advantage`` (and ``step_rewards`` from a PRM, if any), then
    ``train.advantage_scale``."""
    samples = tree_to_samples(tree, cfg.value_head_weight, cfg.global_advantage, step_rewards)
    return scale_advantages(tree, samples, cfg.advantage_scale)


def sample_builder(cfg: TrainConfig) -> Callable[[SearchTree, Sequence[float] | None], list[StepSample]]:
    """:func:`tree_samples` bound to the ``train`` section: what a rollout worker is handed to turn each
    finished tree (and its process rewards) into learner samples."""
    return lambda tree, step_rewards: tree_samples(tree, cfg, step_rewards)
