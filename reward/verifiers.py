"""Outcome verifiers: is a response's final answer right, and are its steps legal?

Every task shares one response format (see ``core.tasks.base``): steps one per line, then a terminal
line ``Answer: <answer>``; lines after it are ignored. Synthetic tasks (countdown, arith) check every
step with the safe parser in ``reward.arithmetic``; data tasks (gsm8k, math) compare the final answer
(``reward.answers``: exact numbers for gsm8k, math-verify in a bounded worker process for math).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from arbor.core.tasks import countdown
from arbor.core.tasks.base import ANSWER_PREFIX, STEP_SEP
from arbor.reward.answers import gsm8k_answer, math_canonical, math_compare, number, show_number
from arbor.reward.arithmetic import ParseError, evaluate, parse_int

log = logging.getLogger("arbor.reward")
_COUNTS: Counter[str] = Counter(crashed=0, timed_out=0)

_ANSWER_TAG = ANSWER_PREFIX.strip()  # "Answer:", so "Answer:27" still counts as the answer line


@dataclass(frozen=True)
class Verdict:
    correct: bool  # the response solves the problem
    reason: str  # why not (or "ok"), for logs and debugging
    answer: str | None  # the normalised final answer, if one was found
    crashed: bool = False  # the verifier itself failed: no verdict on the response (skip it, do not score it)


def _split_response(response: str) -> tuple[list[str], str | None]:
    """Non-empty step lines before the first answer line, and the answer text (None if missing)."""
    steps: list[str] = []
    for raw in response.split(STEP_SEP):
        line = raw.strip()
        if line.startswith(_ANSWER_TAG):
            return steps, line[len(_ANSWER_TAG) :].strip()
        if line:
            steps.append(line)
    return steps, None


def _parse_step(line: str) -> tuple[int, tuple[int, ...], int]:
    """(value of the left side, its literals, the claimed value) of a step ``EXPR=VALUE``."""
    if line.count("=") != 1:
        raise ParseError("expected one step of the form EXPR=VALUE")
    lhs, rhs = line.split("=")
    evaluation = evaluate(lhs)
    return evaluation.value, evaluation.literals, parse_int(rhs)


def _int_answer(answer: str | None) -> int | Verdict:
    """The answer line's integer, or the failing Verdict when it is missing or not an integer."""
    if answer is None:
        return Verdict(False, "no answer line", None)
    try:
        return parse_int(answer)
    except ParseError as exc:
        return Verdict(False, f"answer: {exc}", answer)


def _countdown_steps(steps: list[str], numbers: list[int]) -> tuple[Verdict | None, Counter[int]]:
    """The first illegal line's Verdict (None when every line is legal) and the numbers left after them.

    Lines of the journey format (``core.tasks.countdown``) are steps too: a back line must name a state of
    the current branch before its last step, and returns there; the summary line returns to the start.
    """
    start = Counter(int(n) for n in numbers)
    branch = [start]  # the numbers left after each step of the current branch, the start first
    for i, line in enumerate(steps, 1):
        if line == countdown.SUMMARY_LINE:
            branch = [start]
            continue
        back = countdown.parse_back(line)
        if back is not None:
            depth = next((d for d in range(len(branch) - 2, -1, -1) if branch[d] == Counter(back)), None)
            if depth is None:
                states = ", ".join(" ".join(map(str, sorted(p.elements()))) for p in branch[:-1]) or "none"
                reason = f"step {i} '{line}': not an earlier state of this branch ({states})"
                return Verdict(False, reason, None), branch[-1]
            del branch[depth + 1 :]
            continue
        pool = branch[-1]
        try:
            value, literals, claimed = _parse_step(line)
        except ParseError as exc:
            return Verdict(False, f"step {i} '{line}': {exc}", None), pool
        used = Counter(literals)
        missing = used - pool
        if missing:
            reason = f"step {i} '{line}': {sorted(missing)} not available in {sorted(pool.elements())}"
            return Verdict(False, reason, None), pool
        if claimed < 0:
            return Verdict(False, f"step {i} '{line}': value must be non-negative", None), pool
        if value != claimed:
            return Verdict(False, f"step {i} '{line}': left side equals {value}", None), pool
        pool = pool - used
        pool[claimed] += 1
        branch.append(pool)
    return None, branch[-1]


def _check_countdown(response: str, reference: dict[str, Any]) -> Verdict:
    steps, answer = _split_response(response)
    illegal, pool = _countdown_steps(steps, reference["numbers"])
    if illegal is not None:
        return illegal
    final = _int_answer(answer)
    if isinstance(final, Verdict):
        return final
    target = int(reference["target"])
    if final != target:
        return Verdict(False, f"answer {final} is not the target {target}", str(final))
    if pool[target] == 0:
        return Verdict(False, f"target {target} was not produced by the steps", str(final))
    return Verdict(True, "ok", str(final))


def _arith_steps(steps: list[str]) -> Verdict | None:
    """The first step whose arithmetic is wrong or unparseable (None when every step is right)."""
    for i, line in enumerate(steps, 1):
        try:
            value, _, claimed = _parse_step(line)
        except ParseError as exc:
            return Verdict(False, f"step {i} '{line}': {exc}", None)
        if value != claimed:
            return Verdict(False, f"step {i} '{line}': left side equals {value}", None)
    return None


def _check_arith(response: str, reference: dict[str, Any]) -> Verdict:
    steps, answer = _split_response(response)
    illegal = _arith_steps(steps)
    if illegal is not None:
        return illegal
    final = _int_answer(answer)
    if isinstance(final, Verdict):
        return final
    expected = int(reference["answer"])
    if final != expected:
        return Verdict(False, f"answer {final} is not {expected}", str(final))
    return Verdict(True, "ok", str(final))


def _check_gsm8k(response: str, reference: dict[str, Any]) -> Verdict:
    expected = number(str(reference["answer"]))
    if expected is None:
        raise ValueError(f"reference answer {reference['answer']!r} is not a number")
    found = gsm8k_answer(response)
    if found is None:
        return Verdict(False, "no answer found", None)
    if found != expected:
        return Verdict(False, f"answer {show_number(found)} is not {show_number(expected)}", show_number(found))
    return Verdict(True, "ok", show_number(found))


def _check_math(response: str, reference: dict[str, Any]) -> Verdict:
    result = math_compare(response, str(reference["answer"]))
    if result["reason"].startswith("pathological"):
        log.warning("math verifier: %s", result["reason"])
        _COUNTS["timed_out"] += 1
    return Verdict(result["correct"], result["reason"], result["answer"])


_CHECKERS: dict[str, Callable[[str, dict[str, Any]], Verdict]] = {
    "countdown": _check_countdown,
    "arith": _check_arith,
    "gsm8k": _check_gsm8k,
    "math": _check_math,
}


def _checker(kind: str) -> Callable[[str, dict[str, Any]], Verdict]:
    if kind not in _CHECKERS:
        raise ValueError(f"unknown verifier kind '{kind}'; expected one of {', '.join(_CHECKERS)}")
    return _CHECKERS[kind]


def check(kind: str, response: str, reference: dict[str, Any]) -> Verdict:
    """Verdict on ``response`` for a problem of task ``kind`` with the given reference.

    A verifier that fails (a malformed reference, a dead worker) returns a Verdict with ``crashed`` set:
    callers that train skip such a response instead of scoring it (see ``verifier_counts``).
    """
    checker = _checker(kind)
    try:
        return checker(response, reference)
    except Exception as exc:  # noqa: BLE001 - a verifier bug must not stop a run; it is logged and counted
        _COUNTS["crashed"] += 1
        reason = f"verifier crashed: {type(exc).__name__}: {exc}"
        log.warning("%s verifier: %s", kind, reason)
        return Verdict(False, reason, None, crashed=True)


# Step checks: tasks whose steps can be judged as they are written, from the problem statement alone (the
# numbers given, never the target or the answer), so a search may use them at evaluation too. Data tasks lack
# them: their steps are prose, judged by a learned PRM or the value head instead.
_STEP_CHECKERS: dict[str, Callable[[list[str], dict[str, Any]], Verdict | None]] = {
    "countdown": lambda steps, reference: _countdown_steps(steps, reference["numbers"])[0],
    "arith": lambda steps, reference: _arith_steps(steps),
}


def has_step_check(kind: str) -> bool:
    """Whether task ``kind`` can judge a step as it is written (see :func:`step_fault`)."""
    return kind in _STEP_CHECKERS


def step_fault(kind: str, response: str, reference: dict[str, Any]) -> str | None:
    """Why the steps of a partial ``response`` can no longer lead to a right answer (its first illegal step:
    wrong arithmetic, a number not available, a line that is not a step), or None while every step is legal.

    Every completion of such a response fails the verifier, which checks each step, so a search may score the
    step 0 at once instead of finishing it. Lines from the answer line on are not steps. A checker that fails
    gives no judgement (None): the verifier still judges the finished response.
    """
    checker = _STEP_CHECKERS.get(kind)
    if checker is None:
        return None
    steps, _ = _split_response(response)
    try:
        illegal = checker(steps, reference)
    except Exception as exc:  # noqa: BLE001 - a malformed reference: no step judgement, the verifier decides
        log.debug("%s step check failed: %s", kind, exc)
        return None
    return None if illegal is None else illegal.reason


def verify(kind: str, response: str, reference: dict[str, Any]) -> bool:
    """True iff ``response`` solves the problem (steps legal and final answer right)."""
    return check(kind, response, reference).correct


def verifier_counts() -> dict[str, int]:
    """Verifier failures in this process so far: ``crashed`` (skipped responses) and ``timed_out`` (judged wrong)."""
    return dict(_COUNTS)


def majority_vote(answers: Sequence[str | None], weights: Sequence[float] | None = None) -> int | None:
    """Index of the response a majority vote submits: the first one carrying the answer with the most votes
    (each worth 1, or its weight), ties going to the answer seen first. Responses without an answer do not
    vote; None when none has one."""
    votes: dict[str, float] = {}  # insertion order: the order answers were first seen
    first: dict[str, int] = {}
    for i, answer in enumerate(answers):
        if answer is None:
            continue
        votes[answer] = votes.get(answer, 0.0) + (1.0 if weights is None else weights[i])
        first.setdefault(answer, i)
    if not votes:
        return None
    return first[max(votes, key=lambda a: votes[a])]  # max keeps the first of equal maxima


def extract_answer(kind: str, response: str) -> str | None:
    """The normalised final answer of ``response`` (for majority vote), or None if there is none."""
    _checker(kind)
    if kind in ("countdown", "arith"):
        _, answer = _split_response(response)
        if answer is None:
            return None
        try:
            return str(parse_int(answer))
        except ParseError:
            return answer
    if kind == "gsm8k":
        found = gsm8k_answer(response)
        return None if found is None else show_number(found)
    return math_canonical(response)
