"""Outcome verifiers: is a response's final answer right, and are its steps legal?

Every task shares one response format (see ``core.tasks.base``): steps one per line, then a terminal
line ``Answer: <answer>``; lines after it are ignored. Synthetic tasks (countdown, arith) check every
step with the safe parser in ``reward.arithmetic``; data tasks (gsm8k, math) compare the final answer
after light normalisation.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from core.tasks.base import ANSWER_PREFIX, STEP_SEP
from reward.arithmetic import ParseError, evaluate, parse_int

_ANSWER_TAG = ANSWER_PREFIX.strip()  # "Answer:", so "Answer:27" still counts as the answer line


@dataclass(frozen=True)
class Verdict:
    correct: bool  # the response solves the problem
    reason: str  # why not (or "ok"), for logs and debugging
    answer: str | None  # the normalised final answer, if one was found


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


def _check_countdown(response: str, reference: dict[str, Any]) -> Verdict:
    steps, answer = _split_response(response)
    pool = Counter(int(n) for n in reference["numbers"])
    for i, line in enumerate(steps, 1):
        try:
            value, literals, claimed = _parse_step(line)
        except ParseError as exc:
            return Verdict(False, f"step {i} '{line}': {exc}", None)
        used = Counter(literals)
        missing = used - pool
        if missing:
            return Verdict(
                False, f"step {i} '{line}': {sorted(missing)} not available in {sorted(pool.elements())}", None
            )
        if claimed < 0:
            return Verdict(False, f"step {i} '{line}': value must be non-negative", None)
        if value != claimed:
            return Verdict(False, f"step {i} '{line}': left side equals {value}", None)
        pool = pool - used
        pool[claimed] += 1
    final = _int_answer(answer)
    if isinstance(final, Verdict):
        return final
    target = int(reference["target"])
    if final != target:
        return Verdict(False, f"answer {final} is not the target {target}", str(final))
    if pool[target] == 0:
        return Verdict(False, f"target {target} was not produced by the steps", str(final))
    return Verdict(True, "ok", str(final))


def _check_arith(response: str, reference: dict[str, Any]) -> Verdict:
    steps, answer = _split_response(response)
    for i, line in enumerate(steps, 1):
        try:
            value, _, claimed = _parse_step(line)
        except ParseError as exc:
            return Verdict(False, f"step {i} '{line}': {exc}", None)
        if value != claimed:
            return Verdict(False, f"step {i} '{line}': left side equals {value}", None)
    final = _int_answer(answer)
    if isinstance(final, Verdict):
        return final
    expected = int(reference["answer"])
    if final != expected:
        return Verdict(False, f"answer {final} is not {expected}", str(final))
    return Verdict(True, "ok", str(final))


# Strict number shapes only: Fraction('1e999999999') would build a giant integer.
_NUMBER = re.compile(r"-?\d{1,30}(?:\.\d{1,30})?")
_FRACTION = re.compile(r"-?\d{1,30}/\d{1,30}")
_NUMBER_IN_TEXT = re.compile(r"(?<!\d)-?\d+(?:,\d{3})*(?:\.\d+)?")
_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")


def normalise_answer(text: str) -> str:
    """Canonical form of a free-form answer: no spaces, ``$`` or thousands commas; numbers in lowest terms."""
    s = text.strip().rstrip(".").replace("\\$", "").replace("$", "")
    s = _THOUSANDS.sub("", s)
    s = "".join(s.split())
    if _NUMBER.fullmatch(s) or (_FRACTION.fullmatch(s) and not s.endswith("/0")):
        value = Fraction(s)
        return str(value.numerator) if value.denominator == 1 else str(value)
    return s


def _last_boxed(text: str) -> str | None:
    """Contents of the last ``\\boxed{...}``, matching braces."""
    start = text.rfind("\\boxed{")
    if start < 0:
        return None
    depth, i = 0, start + len("\\boxed")
    for j in range(i, len(text)):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return text[i + 1 : j]
    return None


def _free_form_answer(kind: str, response: str) -> str | None:
    """Raw answer text: the answer line, else a ``#### N`` line, else the last number / last box."""
    _, answer = _split_response(response)
    if answer is None:
        hashes = [line.split("####", 1)[1] for line in response.split(STEP_SEP) if line.strip().startswith("####")]
        if hashes:
            answer = hashes[-1].strip()
    if answer is not None:
        boxed = _last_boxed(answer)
        answer = boxed if boxed is not None else answer
        if kind == "gsm8k" and not _NUMBER.fullmatch(normalise_answer(answer)):
            # "Answer: $18 per day" means 18; GSM8K answers are plain numbers
            numbers = _NUMBER_IN_TEXT.findall(answer)
            answer = numbers[-1] if numbers else answer
        return answer
    if kind == "gsm8k":
        numbers = _NUMBER_IN_TEXT.findall(response)
        return numbers[-1] if numbers else None
    return _last_boxed(response)


def _check_free_form(kind: str) -> Callable[[str, dict[str, Any]], Verdict]:
    def check_one(response: str, reference: dict[str, Any]) -> Verdict:
        raw = _free_form_answer(kind, response)
        if raw is None:
            return Verdict(False, "no answer found", None)
        answer = normalise_answer(raw)
        expected = normalise_answer(str(reference["answer"]))
        if answer != expected:
            return Verdict(False, f"answer '{answer}' is not '{expected}'", answer)
        return Verdict(True, "ok", answer)

    return check_one


_CHECKERS: dict[str, Callable[[str, dict[str, Any]], Verdict]] = {
    "countdown": _check_countdown,
    "arith": _check_arith,
    "gsm8k": _check_free_form("gsm8k"),
    "math": _check_free_form("math"),
}


def _checker(kind: str) -> Callable[[str, dict[str, Any]], Verdict]:
    if kind not in _CHECKERS:
        raise ValueError(f"unknown verifier kind '{kind}'; expected one of {', '.join(_CHECKERS)}")
    return _CHECKERS[kind]


def check(kind: str, response: str, reference: dict[str, Any]) -> Verdict:
    """Verdict on ``response`` for a problem of task ``kind`` with the given reference."""
    return _checker(kind)(response, reference)


def verify(kind: str, response: str, reference: dict[str, Any]) -> bool:
    """True iff ``response`` solves the problem (steps legal and final answer right)."""
    return check(kind, response, reference).correct


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
            return normalise_answer(answer)
    raw = _free_form_answer(kind, response)
    return None if raw is None else normalise_answer(raw)
