"""Verifiers and the safe arithmetic parser: hand-written responses with known verdicts."""

from __future__ import annotations

import re
import time

import pytest

from arbor.reward import Verdict, check, extract_answer, verify
from arbor.reward.arithmetic import MAX_DEPTH, MAX_LENGTH, ParseError, evaluate, parse_int

CD = {"numbers": [3, 5, 7], "target": 22}


# --- the parser -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "value", "literals"),
    [
        ("1+2*3", 7, (1, 2, 3)),
        ("1+2x3", 7, (1, 2, 3)),
        ("(1+2)*3", 9, (1, 2, 3)),
        ("20-7-3", 10, (20, 7, 3)),
        ("-17+5", -12, (17, 5)),
        ("2*-3", -6, (2, 3)),
        ("--4", 4, (4,)),
        ("84/4/3", 7, (84, 4, 3)),
        (" 12 x ( 3 - 5 ) ", -24, (12, 3, 5)),
        ("0", 0, (0,)),
    ],
)
def test_evaluate_valid(text: str, value: int, literals: tuple[int, ...]) -> None:
    result = evaluate(text)
    assert (result.value, result.literals) == (value, literals)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("2**3", "powers"),
        ("2**99999999", "powers"),
        ("9^9^9", "powers"),
        ("1.5+1", "only integers"),
        ("1,000+1", "only integers"),
        ("007+1", "leading zero"),
        ("a+1", "not allowed"),
        ("__import__('os')", "not allowed"),
        ("1_000", "not allowed"),
        ("'1'", "not allowed"),
        ("١+1", "not allowed"),  # an Arabic-Indic digit: str.isdigit() is True, but it is not ASCII
        ("1/0", "division by zero"),
        ("7/2", "not an exact"),
        ("1234567890123", "longer than 12 digits"),
        ("999999999999*999999999999", "exceeds"),
        ("1+" * 120 + "1", "longer than"),
        ("(" * (MAX_DEPTH + 1) + "1" + ")" * (MAX_DEPTH + 1), "nested deeper"),
        ("-" * 40 + "1", "nested deeper"),
        ("", "empty"),
        ("(1+2", "missing ')'"),
        ("1+2)", "unexpected ')'"),
        ("1+", "ends where a number"),
        ("2(3)", "unexpected '('"),
        ("+1", "unexpected '+'"),
    ],
)
def test_evaluate_rejects(text: str, reason: str) -> None:
    with pytest.raises(ParseError, match=re.escape(reason)):
        evaluate(text)


def test_nesting_within_limit_is_fine() -> None:
    assert evaluate("(" * MAX_DEPTH + "1" + ")" * MAX_DEPTH).value == 1
    assert len("(" * MAX_DEPTH + "1" + ")" * MAX_DEPTH) <= MAX_LENGTH


def test_parse_int() -> None:
    assert parse_int(" -12 ") == -12
    for bad in ("1.0", "1e5", "12a", "", "-", "0x10"):
        with pytest.raises(ParseError):
            parse_int(bad)


def test_hostile_input_is_fast() -> None:
    start = time.perf_counter()
    for text in ("2**99999999=1", "9^9^9=1", "9" * 10_000 + "=1", "(" * 10_000 + "=1", "1*" * 5000 + "1=1"):
        assert not verify("countdown", f"{text}\nAnswer: 22", CD)
        assert not verify("arith", f"{text}\nAnswer: 1", {"answer": 1})
    assert time.perf_counter() - start < 1.0


def test_code_is_never_executed(tmp_path) -> None:
    marker = tmp_path / "pwned"
    payloads = [
        f"__import__('os').system('touch {marker}')=0",
        f"open('{marker}','w')=0",
        f"(lambda: open('{marker}','w'))()=0",
    ]
    for payload in payloads:
        for kind, ref in (("countdown", CD), ("arith", {"answer": 0})):
            verdict = check(kind, f"{payload}\nAnswer: 0", ref)
            assert not verdict.correct and "not allowed" in verdict.reason
        # math-verify reads "...=0" as an equation whose right side is the answer, so the reference is 1 here
        assert not verify("math", f"Answer: {payload}", {"answer": "1"})
    assert not marker.exists()


# --- countdown --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("response", "correct", "reason"),
    [
        ("5*3=15\n15+7=22\nAnswer: 22", True, "ok"),
        ("5x3=15\n15+7=22\nAnswer: 22", True, "ok"),
        ("5*3+7=22\nAnswer: 22", True, "ok"),  # a step may be a whole expression
        ("\n  5*3=15  \n\n15+7=22\nAnswer:22\nnonsense after the answer", True, "ok"),
        ("5*3=15\n15+7=22", False, "no answer line"),
        ("5*3=15\n15+7=22\nAnswer: 21", False, "not the target"),
        ("Answer: 22", False, "not produced"),
        ("5*3=15\n15+5=20\nAnswer: 22", False, "not available"),  # 5 given once, used twice
        ("5*4=20\nAnswer: 22", False, "not available"),  # 4 is foreign
        ("5*3=15\n15+7=22\n22+15=37\nAnswer: 22", False, "not available"),  # 15 already consumed
        ("5*3=16\nAnswer: 22", False, "left side equals 15"),
        ("3-5=-2\nAnswer: 22", False, "non-negative"),
        ("7/3=2\nAnswer: 22", False, "not an exact"),
        ("5*3=15\nthen add 7\nAnswer: 22", False, "EXPR=VALUE"),
        ("5*3=15=15\nAnswer: 22", False, "EXPR=VALUE"),
        ("5*3=15\n15+7=22\nAnswer: twenty-two", False, "not an integer"),
        ("5**3=125\nAnswer: 22", False, "powers"),
    ],
)
def test_countdown_cases(response: str, correct: bool, reason: str) -> None:
    verdict = check("countdown", response, CD)
    assert verdict.correct is correct
    assert reason in verdict.reason


def test_countdown_duplicates_and_zero() -> None:
    ref = {"numbers": [5, 5, 8], "target": 80}
    assert verify("countdown", "5+5=10\n10*8=80\nAnswer: 80", ref)
    assert not verify("countdown", "5+5=10\n10*8=80\n5+5=10\nAnswer: 80", ref)
    verdict = check("countdown", "5-5=0\n8/0=0\nAnswer: 80", ref)
    assert not verdict.correct and "division by zero" in verdict.reason


def test_countdown_verdict_carries_answer() -> None:
    assert check("countdown", "5*3=15\n15+7=22\nAnswer: 22", CD) == Verdict(True, "ok", "22")
    assert check("countdown", "Answer: 21", CD).answer == "21"


# --- arith ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("response", "correct", "reason"),
    [
        ("7x3=21\n12+21=33\n33-5=28\nAnswer: 28", True, "ok"),
        ("7*3=21\n12+21=33\n33-5=28\nAnswer: 28", True, "ok"),
        ("Answer: 28", True, "ok"),
        ("7x3=21\n12+21=34\n34-5=29\nAnswer: 29", False, "left side equals 33"),
        ("7x3=21\n12+21=33\n33-5=28\nAnswer: 27", False, "not 28"),
        ("7x3=21\n12+21=33\n33-5=28", False, "no answer line"),
        ("7x3=21\n12+21=33\n33-5=28\nAnswer: 28.0", False, "not an integer"),
    ],
)
def test_arith_cases(response: str, correct: bool, reason: str) -> None:
    verdict = check("arith", response, {"answer": 28})
    assert verdict.correct is correct
    assert reason in verdict.reason


def test_arith_negative_values() -> None:
    ref = {"answer": -12}
    assert verify("arith", "3-20=-17\n-17+5=-12\nAnswer: -12", ref)
    assert not verify("arith", "3-20=17\n17+5=22\nAnswer: -12", ref)


# --- gsm8k / math -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("response", "answer", "correct"),
    [
        ("She sells 48/2 = 24.\nAnswer: 72", "72", True),
        ("Answer: $1,000", "1000", True),
        ("Answer: 10.00", "10", True),
        ("Answer: 18 dollars per day", "18", True),
        ("blah\n#### 72", "72", True),
        ("so the total is 70 + 2 = 72.", "72", True),
        ("Answer: 71", "72", False),
        ("no numbers here", "72", False),
        ("Answer: 72\nAnswer: 71", "72", True),  # the first answer line is terminal
    ],
)
def test_gsm8k_cases(response: str, answer: str, correct: bool) -> None:
    assert verify("gsm8k", response, {"answer": answer}) is correct


def test_extract_answer() -> None:
    assert extract_answer("countdown", "5*3=15\n15+7=22\nAnswer: 22") == "22"
    assert extract_answer("arith", "Answer: -3\nAnswer: 4") == "-3"
    assert extract_answer("arith", "1+2=3") is None
    assert extract_answer("gsm8k", "Answer: $1,234.50") == "2469/2"
    assert extract_answer("gsm8k", "Answer: 1234.5") == extract_answer("gsm8k", "#### 1,234.50")
    assert extract_answer("math", "\\boxed{x^{2}}") == "x**2"  # math-verify's reading, as sympy prints it
    assert extract_answer("math", "Answer: \\frac{1}{2}") == extract_answer("math", "Answer: 0.5")
    assert extract_answer("math", "nothing") is None


def test_unknown_kind() -> None:
    with pytest.raises(ValueError, match="unknown verifier kind 'sudoku'"):
        verify("sudoku", "Answer: 1", {"answer": 1})
    with pytest.raises(ValueError, match="sudoku"):
        extract_answer("sudoku", "Answer: 1")


def test_majority_vote_by_hand() -> None:
    from arbor.reward import majority_vote

    assert majority_vote(["3", None, "4", "4", "3"]) == 0  # a tie goes to the answer seen first
    assert majority_vote(["3", "4", "4"]) == 1  # the first response carrying the winner
    assert majority_vote(["3", "4", "4"], weights=[0.9, 0.3, 0.4]) == 0  # 0.9 against 0.7
    assert majority_vote([None, None]) is None


@pytest.mark.parametrize(
    ("response", "fault"),
    [
        ("5*3=16\n", "left side equals 15"),  # wrong arithmetic
        ("5*3=15\n15+9=24\n", "[9] not available"),  # a number never given
        ("5*3=15\n5+7=12\n", "[5] not available"),  # a number already used
        ("3-5=-2\n", "non-negative"),
        ("7/3=2\n", "not an exact"),
        ("then add 7\n", "EXPR=VALUE"),  # not a step
    ],
)
def test_step_checks_reject_each_illegal_step_kind(response: str, fault: str) -> None:
    from arbor.reward import step_fault

    assert fault in (step_fault("countdown", response, CD) or "")
    # whatever follows an illegal step, the verifier agrees that no completion can be right
    assert not check("countdown", response + "15+7=22\nAnswer: 22", CD).correct


def test_step_checks_pass_legal_steps_and_only_judge_tasks_that_have_them() -> None:
    from arbor.reward import has_step_check, step_fault

    assert step_fault("countdown", "5*3=15\n", CD) is None
    assert step_fault("countdown", "5*3=15\n15+7=22\nAnswer: 23", CD) is None  # the answer is not a step
    assert step_fault("countdown", "5*3=15\n15+7=22\n", {"target": 22}) is None  # no numbers: no judgement
    assert step_fault("arith", "2+3=6\n", {"answer": 5}) == "step 1 '2+3=6': left side equals 5"
    assert step_fault("arith", "2+3=5\n", {"answer": 5}) is None
    assert has_step_check("countdown") and has_step_check("arith")
    assert not has_step_check("gsm8k") and step_fault("gsm8k", "It is 5=6.\n", {"answer": "5"}) is None
