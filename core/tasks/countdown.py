"""Countdown: combine the given numbers with + - * / to reach a target (TinyZero's testbed).

Prompt and gold trace (one binary step per line, larger operand first, then the answer)::

    Use 13 7 25 3 to make 27.
    13-7=6
    6/3=2
    25+2=27
    Answer: 27

Journey format (``train.journey``: a search tree linearised as one response, Stream of Search style). The
explored dead ends come first, each followed by a line that says the branch fails and names the state it
returns to (the numbers left there); then the branch that reaches the target; then the summary line and the
successful path once more, cleanly, and the answer::

    Use 13 7 25 3 to make 27.
    13+7=20
    25-20=5
    fail, back to 3 7 13 25
    13-7=6
    6/3=2
    25+2=27
    Solution:
    13-7=6
    6/3=2
    25+2=27
    Answer: 27

The verifier (``reward.verifiers``) walks these lines as the step-level MDP does: every step legal from the
state it is written in, a back line only to a state of the current branch, the summary line back to the
start; the path written after the last summary line must then reach the target, as in a plain response.

The exact solver works on multisets: ``_values(S)`` is every value an expression tree over *all* of S
can take (memoised across problems), so the shortest solution for a target uses the smallest
sub-multiset whose values contain it. Zero results and ``x*1``, ``x/1`` are pruned: any tree using
them has a shorter tree with the same value, so shortest solutions are unaffected.
"""

from __future__ import annotations

import random
import re
from functools import lru_cache
from itertools import combinations

from arbor.core.config import CountdownConfig
from arbor.core.tasks.base import (
    _BINARY_STEP,
    ANSWER_PREFIX,
    STEP_SEP,
    GeneratedTask,
    Problem,
)

NAME = "countdown"
BACK_PREFIX = "fail, back to "  # a dead end: the branch fails, back to the state with these numbers left
SUMMARY_LINE = "Solution:"  # the successful path follows, written out once more from the start

_RESULT = re.compile(r"=\s*(-?\d+)\s*$")  # the result a step line ends with


@lru_cache(maxsize=1 << 16)
def _splits(nums: tuple[int, ...]) -> tuple[tuple[tuple[int, ...], tuple[int, ...]], ...]:
    """Distinct unordered splits of a sorted multiset into two non-empty sorted parts."""
    first, rest = nums[0], nums[1:]
    seen: dict[tuple[tuple[int, ...], tuple[int, ...]], None] = {}
    for mask in range(1 << len(rest)):
        left = (first,) + tuple(x for i, x in enumerate(rest) if mask >> i & 1)
        right = tuple(x for i, x in enumerate(rest) if not mask >> i & 1)
        if right:
            seen[(left, right)] = None
    return tuple(seen)


def _combine_all(nums: tuple[int, ...]) -> frozenset[int]:
    """Every positive value of an expression tree using each number of the sorted multiset exactly once."""
    if len(nums) == 1:
        return frozenset(nums)
    out: set[int] = set()
    add = out.add
    for left, right in _splits(nums):
        right_values = _values(right)
        for a in _values(left):
            for b in right_values:
                hi, lo = (a, b) if a >= b else (b, a)
                add(hi + lo)
                if hi != lo:
                    add(hi - lo)
                if lo > 1:
                    add(hi * lo)
                    if hi % lo == 0:
                        add(hi // lo)
    return frozenset(out)


# Small multisets recur across problems and their value sets are small: cache many. Sets of 4+ numbers have
# thousands of values and rarely recur, so a short cache keeps memory flat over millions of problems.
_values_small = lru_cache(maxsize=1 << 15)(_combine_all)
_values_large = lru_cache(maxsize=1 << 9)(_combine_all)


def _values(nums: tuple[int, ...]) -> frozenset[int]:
    """Values of all expression trees over the sorted multiset ``nums`` (memoised)."""
    return _values_small(nums) if len(nums) <= 3 else _values_large(nums)


def _sub_multisets(nums: tuple[int, ...], size: int) -> list[tuple[int, ...]]:
    """Distinct sub-multisets of a sorted multiset with ``size`` elements, in a fixed order."""
    return list(dict.fromkeys(combinations(nums, size)))


@lru_cache(maxsize=1 << 13)
def _fewest_steps(nums: tuple[int, ...], max_target: int) -> dict[int, int]:
    """For each reachable value in 1..max_target, the fewest steps that produce it (do not mutate)."""
    table: dict[int, int] = {}
    for size in range(2, len(nums) + 1):
        for sub in _sub_multisets(nums, size):
            for v in _values(sub):
                if v <= max_target and v not in table:
                    table[v] = size - 1
    return table


def _step(a: int, op: str, b: int, value: int) -> str:
    """One step, written larger operand first (``20-7`` not ``7-20``; ``13+7`` not ``7+13``)."""
    hi, lo = (a, b) if a >= b else (b, a)
    return f"{hi}{op}{lo}={value}"


def _partners(op: str, a: int, value: int) -> list[int]:
    """Every b > 0 such that a and b combined with ``op`` (either order) give ``value``."""
    if op == "+":
        out = [value - a]
    elif op == "-":
        out = [a - value, a + value]
    elif op == "*":
        out = [value // a] if value % a == 0 else []
    else:
        out = ([a // value] if a % value == 0 else []) + [a * value]
    return [b for b in out if b > 0]


def _derive(nums: tuple[int, ...], value: int) -> list[str]:
    """Steps of the first tree over all of ``nums`` that evaluates to ``value``.

    Tie-break: the last step's operator in the order + - * /, then the split, then the smaller operand value;
    sub-steps of the larger operand come first.
    """
    if len(nums) == 1:
        return []
    for op in "+-*/":
        for left, right in _splits(nums):
            right_values = _values(right)
            for a in sorted(_values(left)):
                for b in _partners(op, a, value):
                    if b in right_values:
                        first, second = ((left, a), (right, b)) if a >= b else ((right, b), (left, a))
                        return _derive(*first) + _derive(*second) + [_step(a, op, b, value)]
    raise AssertionError(f"{value} is not in the values of {nums}")


def solve(numbers: list[int], target: int) -> list[str] | None:
    """A shortest list of steps that makes ``target`` from ``numbers`` (each used at most once), or None."""
    nums = tuple(sorted(numbers))
    if target in nums:
        return []
    for size in range(2, len(nums) + 1):
        for sub in _sub_multisets(nums, size):
            if target in _values(sub):
                return _derive(sub, target)
    return None


def prompt_for(numbers: list[int], target: int) -> str:
    """The prompt text for a countdown problem."""
    return f"Use {' '.join(map(str, numbers))} to make {target}.{STEP_SEP}"


def problem_key(numbers: list[int], target: int) -> str:
    """Canonical identity: the sorted numbers and the target."""
    return f"{NAME}:{','.join(map(str, sorted(numbers)))}->{target}"


class Countdown(GeneratedTask):
    """Countdown problems from a seed; level L gives ``min_numbers + L`` numbers."""

    name = NAME

    def __init__(
        self, cfg: CountdownConfig, eval_size: int = 200, eval_seed: int = 0, eval_mix: list[float] | None = None
    ) -> None:
        if not 2 <= cfg.min_numbers <= cfg.max_numbers:
            raise ValueError(f"countdown needs 2 <= min_numbers <= max_numbers; got {cfg}")
        if cfg.max_operand < 1 or cfg.max_target < 1:
            raise ValueError(f"countdown needs max_operand >= 1 and max_target >= 1; got {cfg}")
        self.cfg = cfg
        self.num_levels = cfg.max_numbers - cfg.min_numbers + 1
        super().__init__(eval_size, eval_seed, eval_mix)

    def generate(self, rng: random.Random, level: int, uid: str) -> Problem:
        """One problem at ``level`` drawn from ``rng``: numbers first, then a target among those that qualify."""
        cfg = self.cfg
        count = cfg.min_numbers + level
        for _ in range(1000):
            numbers = [rng.randint(1, cfg.max_operand) for _ in range(count)]
            targets = self.targets_for(numbers)
            if targets:
                break
        else:
            need = min(cfg.min_steps, count - 1)
            raise RuntimeError(f"{uid}: no target in 1..{cfg.max_target} needs {need} steps after 1000 draws")
        target = rng.choice(targets)
        steps = solve(numbers, target)
        assert steps is not None
        return Problem(
            task=NAME,
            uid=uid,
            key=problem_key(numbers, target),
            prompt=prompt_for(numbers, target),
            reference={"numbers": numbers, "target": target},
            solution=STEP_SEP.join([*steps, f"{ANSWER_PREFIX}{target}"]),
            level=level,
            meta={"min_steps": len(steps)},
        )

    def targets_for(self, numbers: list[int]) -> list[int]:
        """The targets this task draws for ``numbers`` (sorted): in 1..max_target, not a given number, and needing
        at least ``min_steps`` steps (n numbers allow at most n-1, so a larger min_steps is capped)."""
        need = min(self.cfg.min_steps, len(numbers) - 1)
        fewest = _fewest_steps(tuple(sorted(numbers)), self.cfg.max_target)
        given = set(numbers)
        return sorted(t for t, k in fewest.items() if k >= need and t not in given)

    def hindsight(self, problem: Problem, steps: list[str]) -> Problem | None:
        """The problem that ``steps`` would solve with their last result as the target (hindsight relabelling,
        Andrychowicz et al. 2017, "Hindsight Experience Replay"): the same numbers, that result to make, with
        ``steps`` and the answer line as its ``solution``.

        Only a target this task itself draws for those numbers qualifies (``targets_for``), and never the
        problem's own target. Whether the steps are legal is not judged here: the caller verifies the
        relabelled response as any other. The caller also keeps held-out keys out.
        """
        numbers, own = problem.reference.get("numbers"), problem.reference.get("target")
        found = _RESULT.search(steps[-1]) if steps else None
        if found is None or not isinstance(numbers, list) or not isinstance(own, int):
            return None  # not a step, or a malformed data row (which the verifier refuses as well)
        target = int(found.group(1))
        if target == own or target not in self.targets_for(numbers):
            return None
        key = problem_key(numbers, target)
        return Problem(
            task=NAME,
            uid=f"hindsight/{key}",
            key=key,
            prompt=prompt_for(numbers, target),
            reference={"numbers": list(numbers), "target": target},
            solution=STEP_SEP.join([*(line.strip() for line in steps), f"{ANSWER_PREFIX}{target}"]),
            level=problem.level,
            meta={"hindsight_of": problem.uid},
        )


# ---- journey format --------------------------------------------------------------------------------


def numbers_left(numbers: list[int], steps: list[str]) -> list[int]:
    """The numbers left (sorted) after legal ``a op b=c`` steps: each uses up its operands, adds its result."""
    pool = sorted(numbers)
    for line in steps:
        match = _BINARY_STEP.match(line.strip())
        if match is None:
            raise ValueError(f"not a countdown step: {line!r}")
        a, _, b, c = match.groups()
        for used in (int(a), int(b)):
            pool.remove(used)  # ValueError when the step uses a number that is not there
        pool.append(int(c))
        pool.sort()
    return pool


def back_line(numbers: list[int]) -> str:
    """The line that abandons a branch and returns to the state with ``numbers`` left."""
    return BACK_PREFIX + " ".join(map(str, sorted(numbers)))


def parse_back(line: str) -> list[int] | None:
    """The numbers a back line returns to (sorted), or None when ``line`` is not a back line."""
    line = line.strip()
    if not line.startswith(BACK_PREFIX.strip()):
        return None
    try:
        return sorted(int(t) for t in line[len(BACK_PREFIX.strip()) :].split())
    except ValueError:
        return None


def journey_response(numbers: list[int], branches: list[list[str]], answer: str) -> str:
    """One response that walks ``branches`` (each a list of step lines from the start) in order, then writes
    the last branch, the successful one, once more after the summary line, and the ``answer`` line (a
    single branch is written plainly: its steps and the answer).

    Between two branches it writes a back line to the deepest state they share. A branch that adds nothing
    after that state is an error: the walk would not leave it.
    """
    if not branches:
        raise ValueError("a journey needs at least the successful branch")
    if len(branches) == 1:  # nothing explored besides it: the plain path
        return STEP_SEP.join([*branches[0], answer])
    lines = list(branches[0])
    current = branches[0]
    for branch in branches[1:]:
        shared = 0
        while shared < min(len(current), len(branch)) and current[shared] == branch[shared]:
            shared += 1
        if shared == len(branch) or shared == len(current):
            raise ValueError(f"branch {branch} does not leave the branch before it ({current})")
        lines.append(back_line(numbers_left(numbers, current[:shared])))
        lines += branch[shared:]
        current = branch
    lines += [SUMMARY_LINE, *current, answer]
    return STEP_SEP.join(lines)
