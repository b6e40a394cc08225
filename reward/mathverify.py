"""The ``math`` verifier's comparisons on math-verify; these functions run inside the bounded worker.

Called as ``BoundedWorker("arbor.reward.mathverify").call(...)`` (see ``reward.bounded``), never in the
caller's process: math-verify's own timeouts need the main thread, which the worker has. Both answers go
through ``math_verify.parse`` (LaTeX, ``\\boxed{}``, fractions, intervals, sets, percentages, units) and
are compared with ``math_verify.verify``; nothing here normalises LaTeX by hand.
"""

from __future__ import annotations

from functools import lru_cache
from itertools import product

from math_verify import parse, verify
from math_verify.errors import TimeoutException

MAX_SHOWN = 200  # characters of a parsed answer kept for logs and votes


class _TimedOut(Exception):
    pass


def _shown(parsed: list) -> str | None:
    return str(parsed[0])[:MAX_SHOWN] if parsed else None


def _parse(text: str, timeout_s: int) -> list:
    """math-verify's extraction; a timeout is raised (a pathological answer), any other failure is "none"."""
    try:
        return parse(text, parsing_timeout=timeout_s, raise_on_error=True)
    except TimeoutException:
        raise _TimedOut("parsing timed out") from None
    except Exception:  # noqa: BLE001 - math-verify's own default: an unparsable answer is no answer
        return []


@lru_cache(maxsize=4096)
def _parse_reference(text: str, timeout_s: int) -> list:
    # a reference is parsed once per worker: training verifies many responses against each problem
    return _parse(text, timeout_s)


def _equal(gold: list, pred: list, timeout_s: int) -> bool:
    """math_verify.verify over every (gold, prediction) pair, as it does itself, but a timeout is reported."""
    timed_out = False
    for g, p in product(gold, pred):
        try:
            if verify(g, p, timeout_seconds=timeout_s, raise_on_error=True):
                return True
        except TimeoutException:
            timed_out = True
        except Exception:  # noqa: BLE001 - a pair math-verify cannot compare is not a match
            continue
    if timed_out:
        raise _TimedOut("comparison timed out")
    return False


def compare(response: str, reference: str, timeout_s: int) -> dict:
    """Whether ``response`` states ``reference``'s answer; both are texts math-verify can extract from."""
    try:
        gold = _parse_reference(reference, timeout_s)
        if not gold:
            return {"correct": False, "answer": None, "reason": f"reference '{reference[:MAX_SHOWN]}' does not parse"}
        pred = _parse(response, timeout_s)
        if not pred:
            return {"correct": False, "answer": None, "reason": "no answer found"}
        correct = _equal(gold, pred, timeout_s)
    except _TimedOut as exc:
        return {"correct": False, "answer": None, "reason": f"pathological answer: {exc} after {timeout_s} s"}
    reason = "ok" if correct else f"answer '{_shown(pred)}' is not '{_shown(gold)}'"
    return {"correct": correct, "answer": _shown(pred), "reason": reason}


def canonical(response: str, timeout_s: int) -> str | None:
    """The parsed answer as sympy prints it (so ``1/2`` and ``\\frac{1}{2}`` vote together), or None."""
    try:
        return _shown(_parse(response, timeout_s))
    except _TimedOut:
        return None
