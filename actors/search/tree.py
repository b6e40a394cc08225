"""The record every search returns: a tree of reasoning steps, JSON for inspection, learner samples.

A node is a state of the step-level MDP (prompt + steps so far); the edge into it is one step with its
token ids, the behaviour policy's per-token log-probs and the policy version that produced it. MCTS,
beam search and best-of-N all fill the same record, and a sampled chain is simply a one-branch tree.

Node value follows TreeRL / SPO-tree: V(n) is the mean outcome of the distinct terminal leaves under n,
read off the tree itself (no learned critic needed); the step advantage is V(child) - V(parent).
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from arbor.core.samples import StepSample
from arbor.core.tasks.base import ANSWER_PREFIX
from arbor.reward.prm_labels import completion_stats

_ANSWER_TAG = ANSWER_PREFIX.strip()


@dataclass
class Node:
    id: int  # index in SearchTree.nodes
    parent: int | None  # None for the root (the prompt)
    depth: int  # steps from the root
    text: str = ""  # this step's text, separator included ("" for the root)
    token_ids: list[int] = field(default_factory=list)  # this step's tokens (the prompt's for the root)
    logprobs: list[float] = field(default_factory=list)  # behaviour log-prob of each of token_ids
    policy_version: int = 0  # weights version that generated the step
    prior: float = 1.0  # PUCT prior: policy probability of the step, normalised over its siblings
    finish: str = ""  # why the step ended: step | eos | length ("" for the root)
    terminal: bool = False  # the response ends here (answer line, eos, a length or depth limit)
    children: list[int] = field(default_factory=list)
    visits: int = 0  # search visits (MCTS) or times kept (beam)
    value_sum: float = 0.0  # sum of backed-up values; Q = value_sum / visits
    value_estimate: float | None = None  # value head (or PRM) at this state
    outcome: float | None = None  # terminal reward: verifier in training, value head at evaluation
    mc_value: float | None = None  # mean outcome of the terminal leaves under this node

    @property
    def q(self) -> float | None:
        return self.value_sum / self.visits if self.visits else None

    @property
    def expanded(self) -> bool:
        return bool(self.children)


def is_terminal_step(text: str, finish: str) -> bool:
    """A step ends the response when it is the answer line or generation stopped at eos or a length limit."""
    return finish in ("eos", "length") or text.strip().startswith(_ANSWER_TAG)


@dataclass
class SearchTree:
    problem_uid: str
    prompt: str
    prompt_tokens: list[int]
    kind: str = "mcts"  # mcts | beam | best_of_n | greedy
    nodes: list[Node] = field(default_factory=list)
    tokens_generated: int = 0  # tokens sampled by the policy for this tree
    tokens_forwarded: int = 0  # tokens run through the model for this tree (prompt and steps)
    model_calls: int = 0  # batched model calls this tree took part in
    answer_node: int | None = None  # the terminal node the search chose as its answer
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.nodes:
            self.nodes.append(Node(id=0, parent=None, depth=0, token_ids=list(self.prompt_tokens)))

    @property
    def root(self) -> Node:
        return self.nodes[0]

    def add_child(self, parent: Node, **fields: Any) -> Node:
        """Append a node under ``parent`` and return it."""
        node = Node(id=len(self.nodes), parent=parent.id, depth=parent.depth + 1, **fields)
        self.nodes.append(node)
        parent.children.append(node.id)
        return node

    def path(self, node: Node) -> list[Node]:
        """Nodes from the root down to ``node``, both included."""
        out = [node]
        while out[-1].parent is not None:
            out.append(self.nodes[out[-1].parent])
        return out[::-1]

    def segments(self, node: Node) -> tuple[tuple[int, ...], ...]:
        """Token ids of the prompt and of each step down to ``node``: the prefix the backend continues."""
        return tuple(tuple(n.token_ids) for n in self.path(node))

    def response(self, node: Node) -> str:
        """The response text from the root to ``node`` (the steps, without the prompt)."""
        return "".join(n.text for n in self.path(node)[1:])

    def response_tokens(self, node: Node) -> int:
        return sum(len(n.token_ids) for n in self.path(node)[1:])

    def terminals(self, under: Node | None = None) -> list[Node]:
        """Terminal nodes in the subtree of ``under`` (the whole tree by default)."""
        start = under or self.root
        stack, out = [start], []
        while stack:
            n = stack.pop()
            if n.terminal:
                out.append(n)
            stack.extend(self.nodes[c] for c in n.children)
        return sorted(out, key=lambda n: n.id)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def dumps(self) -> str:
        return json.dumps(self.to_json())

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SearchTree:
        fields = {k: v for k, v in data.items() if k != "nodes"}
        return cls(**fields, nodes=[Node(**n) for n in data["nodes"]])


def backup(path: list[Node], value: float) -> None:
    """Add one visit of ``value`` to every node on ``path`` (root to leaf)."""
    for node in path:
        node.visits += 1
        node.value_sum += value


def compute_mc_values(tree: SearchTree) -> None:
    """Set every node's ``mc_value``: mean outcome of the distinct terminal leaves under it (None if none).

    One post-order pass: each node sums and counts the scored terminals below it.
    """
    total, count = completion_stats(tree)
    for node in tree.nodes:
        node.mc_value = total[node.id] / count[node.id] if count[node.id] else None


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
            )
        )
    return samples


def search_stats(trees: list[SearchTree]) -> dict[str, float]:
    """Cost and shape of a batch of searches, for the logger (DESIGN: "What every run shows")."""
    generated = sum(t.tokens_generated for t in trees)
    n = max(len(trees), 1)
    return {
        "search/trees": float(len(trees)),
        "search/nodes_per_tree": sum(len(t.nodes) for t in trees) / n,
        "search/max_depth": float(max((node.depth for t in trees for node in t.nodes), default=0)),
        "search/terminals_per_tree": sum(len(t.terminals()) for t in trees) / n,
        "search/tokens_generated_per_tree": generated / n,
        "search/model_calls_per_tree": sum(t.model_calls for t in trees) / n,
        "search/forward_tokens_per_generated_token": sum(t.tokens_forwarded for t in trees) / max(generated, 1),
    }


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
