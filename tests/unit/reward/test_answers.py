"""Free-form answer verification (gsm8k, math on math-verify): real data sets, hand-picked forms, time bounds."""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from arbor.actors.search import run_searches, training_scorers
from arbor.core.tasks.base import Problem
from arbor.learner.advantages import tree_to_samples
from arbor.reward import check, verifier_counts, verify
from arbor.reward.bounded import BoundedWorker, CallTimeout, WorkerFailed
from tests.conftest import SHARED_DATA
from tests.search_toy import PROMPT, FixedLogitPolicy, search_cfg

needs_data = pytest.mark.skipif(
    not (SHARED_DATA / "math500_test.jsonl").is_file(), reason=f"shared data sets not found in {SHARED_DATA}"
)


def _rows(name: str) -> list[dict]:
    return [json.loads(line) for line in (SHARED_DATA / name).read_text().splitlines() if line.strip()]


# --- the data sets, whole ---------------------------------------------------------------------------------


@needs_data
def test_gsm8k_test_solutions_verify_against_their_answers() -> None:
    rows = _rows("gsm8k_test.jsonl")
    answers = [r["answer"].rsplit("####", 1)[1].strip() for r in rows]
    # the worked solution as written (calculator annotations, "#### N" last) is a response like any other
    assert all(verify("gsm8k", r["answer"], {"answer": a}) for r, a in zip(rows, answers))
    assert len(rows) == 1319
    # the next problem's answer fails, wherever the two answers differ as numbers
    shifted = [(r, answers[(i + 1) % len(rows)]) for i, r in enumerate(rows)]
    differ = [
        (r, a) for (r, a), own in zip(shifted, answers) if float(a.replace(",", "")) != float(own.replace(",", ""))
    ]
    assert len(differ) > 1200
    assert not any(verify("gsm8k", r["answer"], {"answer": a}) for r, a in differ)


@needs_data
def test_math500_boxed_solutions_verify_against_their_answers() -> None:
    rows = _rows("math500_test.jsonl")
    verdicts = [check("math", r["solution"], {"answer": r["answer"]}) for r in rows]
    failed = [(r["answer"], v.reason) for r, v in zip(rows, verdicts) if not v.correct]
    assert len(rows) == 500 and len(failed) <= 5, failed  # the issue asks for at least 99%; all 500 pass today


@needs_data
def test_math500_solutions_fail_against_another_problems_answer() -> None:
    rows = _rows("math500_test.jsonl")
    wrong = 0
    for i, row in enumerate(rows):
        other = rows[(i + 1) % len(rows)]["answer"]
        if verify("math", f"\\boxed{{{other}}}", {"answer": row["answer"]}):
            continue  # the two answers are the same value (e.g. "5" and "x=5"): not a wrong answer
        wrong += 1
        assert not verify("math", row["solution"], {"answer": other}), (i, row["answer"], other)
    assert wrong > 480


# --- hand-picked forms ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("response", "answer"),
    [
        ("so $\\boxed{\\dfrac{1}{2}}$.", "\\frac12"),  # \dfrac and the brace-less \frac12 are the same fraction
        ("Answer: 0.5", "\\frac{1}{2}"),  # a terminating decimal equals the fraction exactly
        ("\\boxed{4\\frac{2}{3}}", "\\frac{14}{3}"),  # a mixed number
        ("\\boxed{\\sqrt{117}}", "3\\sqrt{13}"),  # an unsimplified radical
        ("\\boxed{(-\\infty,2]}", "(-\\infty, 2]"),  # the same interval, spaced differently
        ("Answer: \\{2, 1\\}", "\\{1,2\\}"),  # sets have no order
        ("\\boxed{-2, 1}", "1,-2"),  # a list of solutions, in another order
        ("\\boxed{7i-2}", "-2 + 7i"),  # a complex number with its terms swapped
        ("\\boxed{-q+p}", "p - q"),  # the same symbolic expression
        ("\\boxed{90}", "90^\\circ"),  # degrees dropped
        ("\\boxed{10\\%}", "0.1"),  # a percentage
        ("\\boxed{1{,}000}", "1000"),  # a LaTeX thousands separator
        ("Answer: x = 5", "5"),  # the right side of an assignment
        ("\\boxed{\\text{Evelyn}}", "\\text{Evelyn}"),  # a text answer
        ("Answer: (3, \\pi/2)", "\\left( 3, \\frac{\\pi}{2} \\right)"),  # \left( \right) and \frac vs /
        ("The final answer is $6-5i$.", "6 - 5i"),  # no box, no answer line: math-verify's own anchor
        ("Answer: \\boxed{9}", "9"),  # a box on the answer line
    ],
)
def test_math_equivalent_forms_pass(response: str, answer: str) -> None:
    verdict = check("math", response, {"answer": answer})
    assert verdict.correct, verdict.reason


@pytest.mark.parametrize(
    ("response", "answer"),
    [
        ("\\boxed{(-\\infty,2)}", "(-\\infty, 2]"),  # the endpoint is open: another interval
        ("\\boxed{4.67}", "\\frac{14}{3}"),  # a rounded decimal is not the exact fraction
        ("\\boxed{3.14}", "\\pi"),  # nor is an approximation of pi
        ("Answer: (\\pi/2, 3)", "\\left( 3, \\frac{\\pi}{2} \\right)"),  # an ordered pair, swapped
        ("\\boxed{6+5i}", "6 - 5i"),  # the sign of the imaginary part
        ("\\boxed{x^3}", "x^2"),  # another power
        ("\\boxed{1}", "\\{1,2\\}"),  # one element of a set is not the set
        ("\\boxed{42}", "52_8"),  # 52 in base 8 written in base 10 is not the asked form (nor 52)
        ("Answer: 8", "9"),  # plainly wrong
        ("\\boxed{9", "9"),  # a box that never closes holds no answer
        ("Answer: 9\nAnswer: 8", "8"),  # the first answer line is the terminal step; later lines are ignored
    ],
)
def test_math_near_misses_fail(response: str, answer: str) -> None:
    assert not verify("math", response, {"answer": answer})


@pytest.mark.parametrize(
    ("response", "correct"),
    [
        ("A: 18", True),  # a final "A:" line
        ("Final answer: 18 dollars", True),  # units after the number
        ("The answer is $18.", True),  # a dollar sign and a full stop
        ("She earns \\boxed{18} a day.", True),  # a box, no answer line
        ("#### 1,8", False),  # "1,8" is not a thousands group: the last number is 8
        ("Answer: 18.5", False),  # a decimal that is not 18
        ("Answer: 180", False),  # a longer number containing 18 is not 18
        ("Answer: 17\n#### 18", False),  # the answer line comes first; "####" only without one
        ("18 ducks lay 9 eggs", False),  # no answer marker: the last number (9) counts
    ],
)
def test_gsm8k_forms(response: str, correct: bool) -> None:
    assert verify("gsm8k", response, {"answer": "18"}) is correct


# --- time bounds, threads, crashes ------------------------------------------------------------------------


def test_math_verifies_off_the_main_thread_and_concurrently() -> None:
    # math-verify's own timeouts use signal.alarm, which raises off the main thread; ours run in a worker
    cases = [("Answer: \\frac{1}{2}", "0.5", True), ("Answer: 3", "4", False)] * 8
    with ThreadPoolExecutor(max_workers=4) as pool:
        got = list(pool.map(lambda c: verify("math", c[0], {"answer": c[1]}), cases))
    assert got == [c[2] for c in cases]
    seen: list[bool] = []
    thread = threading.Thread(target=lambda: seen.append(verify("math", "\\boxed{2^{10}}", {"answer": "1024"})))
    thread.start()
    thread.join()
    assert seen == [True]


def test_pathological_math_answer_is_false_with_a_logged_reason(caplog: pytest.LogCaptureFixture) -> None:
    before = verifier_counts()["timed_out"]
    start = time.perf_counter()
    with caplog.at_level("WARNING", logger="arbor.reward"):
        verdict = check("math", "Answer: \\boxed{10^{10^{10}}}", {"answer": "9"})
    assert not verdict.correct and not verdict.crashed
    assert "pathological" in verdict.reason and "pathological" in caplog.text
    assert time.perf_counter() - start < 20  # the bound: 5 s per parse or comparison inside the worker, 17 s hard
    assert verifier_counts()["timed_out"] == before + 1
    assert not verify("math", "x" * 30_000, {"answer": "1"})  # overlong responses are not read at all
    assert verify("math", "Answer: 3", {"answer": "3"})  # and the worker still answers afterwards


def test_bounded_worker_kills_an_overrunning_call_and_restarts() -> None:
    # time.sleep in the child stands for a computation that ignores signals (a C-level big-integer power)
    worker = BoundedWorker("time")
    try:
        with pytest.raises(CallTimeout):
            worker.call("sleep", 30, timeout_s=0.5)
        assert worker.call("sleep", 0, timeout_s=10) is None  # a fresh child took over
        assert worker.starts == 2
    finally:
        worker.close()


def test_bounded_worker_caps_memory() -> None:
    worker = BoundedWorker("builtins", memory_mb=512)
    try:
        with pytest.raises(WorkerFailed, match="MemoryError"):
            worker.call("bytearray", 2**31, timeout_s=30)
        assert worker.call("len", "abc", timeout_s=30) == 3  # the child survives its MemoryError
    finally:
        worker.close()


def test_a_verifier_crash_is_a_crashed_verdict_not_an_exception(caplog: pytest.LogCaptureFixture) -> None:
    before = verifier_counts()["crashed"]
    with caplog.at_level("WARNING", logger="arbor.reward"):
        verdict = check("gsm8k", "Answer: 3", {})  # a reference without its answer: the checker raises
    assert verdict.crashed and not verdict.correct and "KeyError" in verdict.reason
    assert verifier_counts()["crashed"] == before + 1 and "KeyError" in caplog.text
    assert check("gsm8k", "Answer: 3", {"answer": "three"}).crashed  # a reference that is no number


def test_a_crashing_verifier_skips_the_response_and_the_search_goes_on(caplog: pytest.LogCaptureFixture) -> None:
    # a reference without its answer makes the gsm8k verifier raise inside the search
    problems = [Problem("gsm8k", f"gsm8k/data.jsonl:{i}", f"k{i}", PROMPT, {}) for i in range(3)]
    before = verifier_counts()["crashed"]
    cfg = search_cfg(kind="best_of_n", num_samples=4)
    with caplog.at_level("WARNING", logger="arbor.search"):
        trees = run_searches(FixedLogitPolicy(seed=2), problems, cfg, training_scorers)
    assert "skipping a response to gsm8k/data.jsonl:2" in caplog.text  # a data task's uid names file and line
    assert all(n.outcome is None for t in trees for n in t.terminals())
    assert [tree_to_samples(t) for t in trees] == [[], [], []]  # skipped: nothing to train on, nothing scored 0
    assert verifier_counts()["crashed"] == before + 12
