"""Free-form final answers (GSM8K, MATH): where a response states its answer, and whether it is right.

Where the answer sits, in order: the first ``Answer:`` line (Arbor's terminal step), else the last
``#### N`` line (GSM8K's worked solutions), else the last ``A:`` / ``Final answer:`` line or "the answer
is ..." phrase; without any of them, the whole response (the last ``\\boxed{}``, or the last number).

- ``gsm8k`` answers are numbers: the last number of that region (``\\boxed{}`` content first), with
  thousands commas, ``$`` and trailing units dropped, compared exactly as fractions. Pure Python with
  bounded regexes, so it runs in-process.
- ``math`` answers go to math-verify in a bounded worker process (``reward.bounded``,
  ``reward.mathverify``): an answer line without math delimiters is read as LaTeX (``$...$``), a whole
  response as math-verify extracts it (``\\boxed{}``, "final answer is", the last expression). A call
  that overruns ``timeout_s`` (huge powers, deep nesting) is killed and judged wrong, with the reason.
"""

from __future__ import annotations

import math
import re
from fractions import Fraction

from arbor.core.tasks.base import ANSWER_PREFIX, STEP_SEP
from arbor.reward.bounded import BoundedWorker, CallTimeout

_ANSWER_TAG = ANSWER_PREFIX.strip()  # "Answer:", so "Answer:27" still counts as the answer line
MAX_RESPONSE_CHARS = 20_000  # longer responses are judged wrong unread: no answer needs this much text
MAX_NUMBER_CHARS = 60  # a "number" longer than this is not an answer (and would make a huge Fraction)
MATH_TIMEOUT_S = 5  # math-verify's bound on each parse and comparison (its own default; whole seconds)

_HASHES = re.compile(r"^\s*####\s*(.*)$", re.MULTILINE)
_LABELLED = re.compile(r"^\s*(?:A|Final answer)\s*:\s*(.+)$", re.MULTILINE | re.IGNORECASE)
_ANSWER_IS = re.compile(r"\bthe (?:final )?answer is\s*:?\s*(.+)$", re.MULTILINE | re.IGNORECASE)
# thousands groups only where they are well formed: "1,000" is 1000, "1,2" is two numbers
_NUMBER = re.compile(r"(?<![\d.])-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?")
_MATH_DELIMITERS = re.compile(r"(?<!\\)\$|\\boxed|\\\(|\\\[")

_worker = BoundedWorker("arbor.reward.mathverify")


def answer_line(response: str) -> str | None:
    """Text after the first ``Answer:`` line's tag (the terminal step), or None when there is none."""
    for raw in response.split(STEP_SEP):
        line = raw.strip()
        if line.startswith(_ANSWER_TAG):
            return line[len(_ANSWER_TAG) :].strip()
    return None


def answer_region(response: str) -> str | None:
    """The text that states the final answer (see the module docstring), or None for "the whole response"."""
    found = answer_line(response)
    if found is not None:
        return found
    for pattern in (_HASHES, _LABELLED, _ANSWER_IS):
        matches = pattern.findall(response)
        if matches:
            return matches[-1].strip()
    return None


def last_boxed(text: str) -> str | None:
    """Contents of the last ``\\boxed{...}``, braces matched; None when there is none or it never closes."""
    start = text.rfind("\\boxed{")
    if start < 0:
        return None
    depth = 0
    for j in range(start + len("\\boxed"), len(text)):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return text[start + len("\\boxed{") : j]
    return None


def number(text: str) -> Fraction | None:
    """The last number in ``text`` (``$1,234.50`` is 2469/2), or None."""
    found = _NUMBER.findall(text)
    if not found or len(found[-1]) > MAX_NUMBER_CHARS:
        return None
    return Fraction(found[-1].replace(",", ""))


def gsm8k_answer(response: str) -> Fraction | None:
    """The numeric final answer of a GSM8K-style response, or None."""
    region = answer_region(response)
    text = region if region is not None else response
    boxed = last_boxed(text)
    return number(boxed if boxed is not None else text)


def show_number(value: Fraction) -> str:
    """``18``, ``-3`` or ``2469/2``: a canonical spelling, so equal answers vote together."""
    return str(value.numerator) if value.denominator == 1 else str(value)


def as_latex(text: str) -> str:
    """``text`` as math-verify should read it: as is when it has math delimiters, else inside ``$...$``."""
    return text if _MATH_DELIMITERS.search(text) else f"${text}$"


def math_text(response: str) -> str:
    """What math-verify reads of a response: its answer region as LaTeX, else the whole response."""
    region = answer_region(response)
    return response if region is None else as_latex(region)


def math_compare(response: str, reference: str, timeout_s: int = MATH_TIMEOUT_S) -> dict:
    """math-verify's judgement of ``response`` against ``reference`` (keys: correct, answer, reason).

    Raises ``WorkerFailed`` when the worker dies other than by timeout (a crash, not a verdict).
    """
    if len(response) > MAX_RESPONSE_CHARS:
        return {"correct": False, "answer": None, "reason": f"response longer than {MAX_RESPONSE_CHARS} characters"}
    inner = max(1, math.ceil(timeout_s))
    try:
        return _worker.call("compare", math_text(response), as_latex(reference), inner, timeout_s=3 * inner + 2)
    except CallTimeout as exc:
        return {"correct": False, "answer": None, "reason": f"pathological answer: {exc}; the worker was restarted"}


def math_canonical(response: str, timeout_s: int = MATH_TIMEOUT_S) -> str | None:
    """math-verify's reading of the final answer (for votes), or None."""
    if len(response) > MAX_RESPONSE_CHARS:
        return None
    inner = max(1, math.ceil(timeout_s))
    try:
        return _worker.call("canonical", math_text(response), inner, timeout_s=3 * inner + 2)
    except CallTimeout:
        return None
