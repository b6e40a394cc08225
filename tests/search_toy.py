"""A fixed-logit policy over a toy step task whose best first step is known, behind the StepBackend Protocol.

Each step is one token from a five-step vocabulary. At the root the policy prefers ``bad`` (p 0.58)
over ``good`` and ``meh`` (p 0.21 each); only ``good`` can be followed by the right answer
(``Answer: 1``, p 0.73), the others lead to ``Answer: 0`` only. So the best first step is ``good``
with true value 0.73 under the policy and 1 under a maximising search, the others 0. It is a real
sampler with seeded randomness, used here in place of a language model (not a mock of the search).
"""

from __future__ import annotations

import dataclasses
import math
import random
from collections.abc import Sequence

from arbor.actors.search.backend import StepOutput, StepRequest, StepResult
from arbor.core.config import SearchConfig
from arbor.core.tokenizer import build_char_tokenizer
from arbor.core.tree import SearchTree

STEPS = ["good\n", "bad\n", "meh\n", "Answer: 1\n", "Answer: 0\n"]
GOOD, BAD, MEH, RIGHT, WRONG = range(5)
NEG = -math.inf
PROMPT = "Pick a path.\n"


def logits(state: tuple[int, ...]) -> list[float]:
    """Fixed logits over STEPS after the steps in ``state``."""
    if not state:
        return [0.0, 1.0, 0.0, NEG, NEG]
    if state == (GOOD,):
        return [NEG, NEG, NEG, 1.0, 0.0]
    return [NEG, NEG, NEG, NEG, 0.0]


def true_value(state: tuple[int, ...]) -> float:
    """Probability that the policy, continuing from ``state``, answers right."""
    if state and state[-1] in (RIGHT, WRONG):
        return 1.0 if state[-1] == RIGHT else 0.0
    if not state:
        return sum(p * true_value((a,)) for a, p in enumerate(softmax(logits(()))))
    return softmax(logits(state))[RIGHT]


def softmax(xs: Sequence[float], temperature: float = 1.0) -> list[float]:
    top = max(xs)
    ws = [math.exp((x - top) / temperature) if x > NEG else 0.0 for x in xs]
    total = sum(ws)
    return [w / total for w in ws]


def outcome(response: str) -> float:
    """The toy verifier: right iff the response ends with the right answer."""
    return 1.0 if response.endswith(STEPS[RIGHT]) else 0.0


class FixedLogitPolicy:
    """StepBackend: samples steps from :func:`logits`; value estimates are constant or the true values."""

    def __init__(self, seed: int = 0, informative_values: bool = False):
        self.rng = random.Random(seed)
        self.informative_values = informative_values
        self.policy_version = 0
        self.calls: list[int] = []  # requests per continue_steps call

    def encode(self, text: str) -> list[int]:
        return [100 + ord(c) for c in text]  # prompt ids never collide with step ids 0..4

    def release(self, prompt: tuple[int, ...]) -> None:
        """Nothing is cached."""

    def _value(self, state: tuple[int, ...]) -> float:
        return true_value(state) if self.informative_values else 0.5

    def continue_steps(self, requests: Sequence[StepRequest]) -> list[StepResult]:
        self.calls.append(len(requests))
        results = []
        for req in requests:
            state = tuple(seg[0] for seg in req.segments[1:])
            probs = softmax(logits(state), req.temperature or 1.0)
            steps = []
            for _ in range(req.num_samples):
                if req.temperature == 0:
                    a = max(range(len(probs)), key=probs.__getitem__)
                else:
                    a = self.rng.choices(range(len(probs)), weights=probs)[0]
                steps.append(StepOutput([a], [math.log(probs[a])], STEPS[a], "step", self._value(state + (a,))))
            n = len(steps)
            results.append(StepResult(self._value(state), steps, self.policy_version, n, n, 1))
        return results


def leaf_mean(tree: SearchTree, node_id: int) -> float | None:
    """Brute force: mean outcome of the terminal leaves reachable from node_id."""
    outcomes, stack = [], [node_id]
    while stack:
        n = tree.nodes[stack.pop()]
        if n.terminal:
            outcomes.append(n.outcome)
        stack += n.children
    return sum(outcomes) / len(outcomes) if outcomes else None


_VARIANT = {  # a search setting's section in the schema, for tests that name settings flat
    **dict.fromkeys(
        (
            "simulations",
            "c_puct",
            "dirichlet_alpha",
            "dirichlet_eps",
            "virtual_loss",
            "leaves_per_round",
            "token_budget",
            "close_ended",
        ),
        "mcts",
    ),
    "beam_width": "beam",
    "num_samples": "best_of_n",
}


def plain_search() -> SearchConfig:
    """The schema's search with every lever off (no step checks, duplicates merged, ended steps not closed,
    MCTS at temperature 1): the algorithms' own mechanics, which the tests of each lever build on."""
    cfg = SearchConfig()
    mcts = dataclasses.replace(cfg.mcts, close_ended=False, temperature=1.0)
    return dataclasses.replace(cfg, step_checks=False, distinct_children=False, mcts=mcts)


def search_cfg(base: SearchConfig | None = None, **settings) -> SearchConfig:
    """``base`` (:func:`plain_search` if none) with ``settings`` applied, variant settings (``simulations``,
    ``beam_width``, ``num_samples``, ...) into their sections (``mcts``, ``beam``, ``best_of_n``)."""
    cfg = base or plain_search()
    flat = {k: v for k, v in settings.items() if k not in _VARIANT}
    for section in ("mcts", "beam", "best_of_n"):
        mine = {("width" if k == "beam_width" else k): v for k, v in settings.items() if _VARIANT.get(k) == section}
        if mine:
            flat[section] = dataclasses.replace(getattr(cfg, section), **mine)
    return dataclasses.replace(cfg, **flat)


def text_tree(uid: str, prompt: str, paths: list[tuple[list[str], float]]) -> SearchTree:
    """A tree of character-tokenized text lines: each path (lines from the root, its last line a terminal with
    that outcome) shares the nodes of the paths before it as far as their lines agree; steps at version 3."""
    tok = build_char_tokenizer()
    tree = SearchTree(uid, prompt, tok.encode(prompt, add_special_tokens=False))
    for lines, outcome in paths:
        node = tree.root
        for line in lines:
            same = [c for c in node.children if tree.nodes[c].text == line]
            if same:
                node = tree.nodes[same[0]]
                continue
            ids = tok.encode(line, add_special_tokens=False)
            node = tree.add_child(node, text=line, token_ids=ids, logprobs=[-0.5] * len(ids), policy_version=3)
        node.terminal, node.outcome = True, outcome
    return tree


def hand_tree() -> SearchTree:
    """root -> a -> {a1 (1), a2 (0), a3 (open)}; root -> b (1); root -> c (open, no terminal below)."""
    tree = SearchTree("p/0", "Q?\n", [9, 8])
    root = tree.root
    a = tree.add_child(root, text="a\n", token_ids=[1, 0], logprobs=[-0.1, -0.2], value_estimate=0.4)
    tree.add_child(a, text="Answer: 1\n", token_ids=[5], logprobs=[-0.3], terminal=True, outcome=1.0)
    tree.add_child(a, text="Answer: 2\n", token_ids=[6], logprobs=[-0.4], terminal=True, outcome=0.0)
    tree.add_child(a, text="x\n", token_ids=[7], logprobs=[-0.5])
    tree.add_child(root, text="Answer: 1\n", token_ids=[5], logprobs=[-0.6], terminal=True, outcome=1.0)
    tree.add_child(root, text="c\n", token_ids=[3], logprobs=[-0.7])
    return tree
