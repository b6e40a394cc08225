"""The record every search returns: a tree of reasoning steps, its Monte-Carlo values and its cost.

A node is a state of the step-level MDP (prompt + steps so far); the edge into it is one step with its
token ids, the behaviour policy's per-token log-probs and the policy version that produced it. MCTS,
beam search and best-of-N all fill the same record, and a sampled chain is simply a one-branch tree.
It is the data type where the searches (``arbor.actors.search``), the learner's advantages
(``arbor.learner.advantages``) and the process-reward labels (``arbor.reward.prm_labels``) meet.

Node value follows TreeRL / SPO-tree: V(n) is the mean outcome of the distinct terminal leaves under n,
read off the tree itself (no learned critic needed).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from arbor.core.errors import DataError

log = logging.getLogger(__name__)


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
    pruned_steps: int = 0  # steps the task's step check ended at once (search.step_checks)
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


def completion_stats(tree: SearchTree, step_rewards: Sequence[float] | None = None) -> tuple[list[float], list[int]]:
    """Per node: (sum of returns, count) over the scored terminal leaves of its subtree, a leaf's return
    being its outcome plus, with ``step_rewards`` (per node id), the rewards of the steps down to it.

    One post-order pass: children always come after their parent in ``tree.nodes``.
    """
    total = [0.0] * len(tree.nodes)
    count = [0] * len(tree.nodes)
    for node in reversed(tree.nodes):
        if node.terminal and node.outcome is not None:
            total[node.id] += node.outcome
            count[node.id] += 1
        if node.parent is not None:
            total[node.parent] += total[node.id]
            if step_rewards is not None:
                total[node.parent] += step_rewards[node.id] * count[node.id]
            count[node.parent] += count[node.id]
    return total, count


def compute_mc_values(tree: SearchTree) -> None:
    """Set every node's ``mc_value``: mean outcome of the distinct terminal leaves under it (None if none).

    One post-order pass: each node sums and counts the scored terminals below it.
    """
    total, count = completion_stats(tree)
    for node in tree.nodes:
        node.mc_value = total[node.id] / count[node.id] if count[node.id] else None


def search_stats(trees: list[SearchTree]) -> dict[str, float]:
    """Cost and shape of a batch of searches, for the logger and the dashboards."""
    generated = sum(t.tokens_generated for t in trees)
    n = max(len(trees), 1)
    return {
        "search/trees": float(len(trees)),
        "search/nodes_per_tree": sum(len(t.nodes) for t in trees) / n,
        "search/max_depth": float(max((node.depth for t in trees for node in t.nodes), default=0)),
        "search/terminals_per_tree": sum(len(t.terminals()) for t in trees) / n,
        "search/tokens_generated_per_tree": generated / n,
        "search/model_calls_per_tree": sum(t.model_calls for t in trees) / n,
        "search/pruned_steps_per_tree": sum(t.pruned_steps for t in trees) / n,
        "search/forward_tokens_per_generated_token": sum(t.tokens_forwarded for t in trees) / max(generated, 1),
    }


def save_trees(path: Path, trees: Sequence[SearchTree]) -> None:
    """One tree's JSON per line."""
    with path.open("w") as f:
        for tree in trees:
            f.write(tree.dumps() + "\n")


def load_trees(path: str | Path) -> list[SearchTree]:
    """Trees saved by :func:`save_trees`; a line that is not a tree is skipped and logged with its line number."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"prm.trees: no such file: {path}")
    trees = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            trees.append(SearchTree.from_json(json.loads(line)))
        except (ValueError, TypeError, KeyError) as exc:
            log.warning("skipping %s:%d: not a search tree (%s)", path, number, exc)
    if not trees:
        raise DataError(f"prm.trees: {path} holds no search tree")
    return trees
