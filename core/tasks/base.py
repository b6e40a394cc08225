"""What a task is: problems with prompts, gold step-by-step traces and the reference a verifier needs.

Response format shared by every task (the step-level MDP's actions are its lines):

    <step 1>\\n<step 2>\\n...\\nAnswer: <answer>

A step ends at a newline (``STEP_SEP``); the line starting with ``ANSWER_PREFIX`` is terminal.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Protocol

from arbor.core.tasks.split import EVAL_SEED_OFFSET, check_train_index

STEP_SEP = "\n"
ANSWER_PREFIX = "Answer: "


@dataclass(frozen=True)
class Problem:
    task: str  # task name: countdown | arith | gsm8k | math
    uid: str  # stable id, e.g. "countdown/eval/17" or "gsm8k/test.jsonl:12"
    key: str  # canonical identity of the problem's content, used to keep train and held-out sets apart
    prompt: str  # text given to the model; ends with STEP_SEP
    reference: dict[str, Any]  # what reward.verify needs (countdown: numbers, target; others: answer)
    solution: str | None = None  # gold trace in the response format, without the prompt
    level: int = 0  # difficulty level (0 = easiest)
    meta: dict[str, Any] = field(default_factory=dict)


class Task(Protocol):
    """A source of problems. Generated tasks are pure functions of (seed, level)."""

    name: str
    num_levels: int

    def train_problem(self, index: int, level_mix: list[float] | None = None) -> Problem:
        """The index-th training problem (deterministic), its level drawn from ``level_mix``."""
        ...

    def eval_problems(self) -> list[Problem]:
        """The fixed held-out set for this config."""
        ...

    def corrupt(self, solution: str, rng: random.Random) -> str:
        """A copy of a gold trace with one injected error, so that it no longer verifies."""
        ...


def pick_level(rng: random.Random, num_levels: int, mix: list[float] | None) -> int:
    """Draw a difficulty level from ``mix`` (one weight per level), uniform when ``mix`` is None."""
    if mix is None:
        return rng.randrange(num_levels)
    if len(mix) != num_levels or any(w < 0 for w in mix) or sum(mix) <= 0:
        raise ValueError(f"a difficulty mix needs {num_levels} non-negative weights with a positive sum; got {mix}")
    return rng.choices(range(num_levels), weights=mix)[0]


# (rng, level, uid) -> Problem: how a synthetic task turns randomness into one problem
Generator = Callable[[random.Random, int, str], Problem]


def seeded_problem(
    generate: Generator, uid: str, seed: int, num_levels: int, mix: list[float] | None, avoid: Collection[str] = ()
) -> Problem:
    """The problem for ``seed``: level from ``mix``, content from ``random.Random(seed)``, key not in ``avoid``."""
    # a separate stream for the level, so a problem's content does not depend on the mix that picked its level
    level = pick_level(random.Random(f"level/{seed}"), num_levels, mix)
    rng = random.Random(seed)
    for _ in range(1000):
        problem = generate(rng, level, uid)
        if problem.key not in avoid:
            return problem
    raise RuntimeError(f"{uid}: no problem at level {level} outside the {len(avoid)} excluded keys after 1000 draws")


def held_out_problems(
    generate: Generator, task: str, num_levels: int, size: int, first_seed: int, mix: list[float] | None
) -> list[Problem]:
    """``size`` distinct held-out problems from seeds ``EVAL_SEED_OFFSET + first_seed + j``."""
    problems: list[Problem] = []
    keys: set[str] = set()
    for j in range(size):
        problem = seeded_problem(generate, f"{task}/eval/{j}", EVAL_SEED_OFFSET + first_seed + j, num_levels, mix, keys)
        keys.add(problem.key)
        problems.append(problem)
    return problems


_BINARY_STEP = re.compile(r"^(-?\d+)([-+*x/])(\d+)=(-?\d+)$")


def _nudge(value: int, rng: random.Random, allow_negative: bool) -> int:
    """A nearby integer different from ``value`` (non-negative unless allowed)."""
    choices = [value + d for d in range(-9, 10) if d and (allow_negative or value + d >= 0)]
    return rng.choice(choices)


def _binary_value(a: int, op: str, b: int) -> int | None:
    if op == "+":
        return a + b
    if op == "-":
        return a - b
    if op in "*x":
        return a * b
    return a // b if b and a % b == 0 else None


def corrupt_equation_trace(solution: str, rng: random.Random, *, allow_negative: bool) -> str:
    """Inject one error into a trace of ``a op b=c`` steps: a wrong result, a wrong operand or a wrong answer."""
    lines = solution.split(STEP_SEP)
    steps = [i for i, line in enumerate(lines) if _BINARY_STEP.match(line)]
    answers = [i for i, line in enumerate(lines) if line.startswith(ANSWER_PREFIX)]
    kinds = [k for k, ok in (("result", steps), ("operand", steps), ("answer", answers)) if ok]
    if not kinds:
        raise ValueError(f"trace has neither steps nor an answer line: {solution!r}")
    kind = rng.choice(kinds)
    if kind == "answer":
        i = answers[0]
        value = int(lines[i][len(ANSWER_PREFIX) :])
        lines[i] = f"{ANSWER_PREFIX}{_nudge(value, rng, allow_negative)}"
        return STEP_SEP.join(lines)
    i = rng.choice(steps)
    a_text, op, b_text, c_text = _BINARY_STEP.match(lines[i]).groups()  # type: ignore[union-attr]
    a, b, c = int(a_text), int(b_text), int(c_text)
    if kind == "result":
        lines[i] = f"{a}{op}{b}={_nudge(c, rng, allow_negative)}"
        return STEP_SEP.join(lines)
    # a wrong operand: keep the claimed result, so the step's arithmetic no longer holds
    options = [(x, b) for x in sorted({_nudge(a, rng, allow_negative) for _ in range(4)})]
    options += [(a, y) for y in sorted({_nudge(b, rng, False) for _ in range(4)}) if y > 0]
    options = [(x, y) for x, y in options if _binary_value(x, op, y) != c]
    x, y = rng.choice(options)
    lines[i] = f"{x}{op}{y}={c}"
    return STEP_SEP.join(lines)


class GeneratedTask:
    """Plumbing shared by tasks generated from seeds: the held-out set, the training stream, corruption.

    A subclass sets ``name`` and ``num_levels`` and implements ``generate(rng, level, uid)``.
    """

    name: str
    num_levels: int
    negative_values = False  # whether a corrupted step may show a negative number

    def __init__(self, eval_size: int = 200, eval_seed: int = 0, eval_mix: list[float] | None = None) -> None:
        self.eval_size = eval_size
        self.eval_seed = eval_seed
        self.eval_mix = eval_mix

    def generate(self, rng: random.Random, level: int, uid: str) -> Problem:
        raise NotImplementedError

    @cached_property
    def _eval(self) -> list[Problem]:
        return held_out_problems(
            self.generate, self.name, self.num_levels, self.eval_size, self.eval_seed, self.eval_mix
        )

    @cached_property
    def _eval_keys(self) -> frozenset[str]:
        return frozenset(p.key for p in self._eval)

    def train_problem(self, index: int, level_mix: list[float] | None = None) -> Problem:
        """The index-th training problem; never one of the held-out problems."""
        seed = check_train_index(index)
        uid = f"{self.name}/train/{index}"
        return seeded_problem(self.generate, uid, seed, self.num_levels, level_mix, self._eval_keys)

    def eval_problems(self) -> list[Problem]:
        """The fixed held-out set (seeds from EVAL_SEED_OFFSET + eval_seed)."""
        return list(self._eval)

    def corrupt(self, solution: str, rng: random.Random) -> str:
        """The trace with one wrong step result, one wrong operand or a wrong final answer."""
        return corrupt_equation_trace(solution, rng, allow_negative=self.negative_values)
