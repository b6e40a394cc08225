"""Tasks: gold traces verify, held-out sets are fixed and disjoint from training, corruptions fail."""

from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path

import pytest

from arbor.core.config import ArithConfig, CountdownConfig, DataConfig, TaskConfig
from arbor.core.tasks import build_task
from arbor.core.tasks.arith import Arith, solve_chain
from arbor.core.tasks.base import STEP_SEP, pick_level
from arbor.core.tasks.countdown import Countdown, solve
from arbor.core.tasks.jsonl import DataError, JsonlTask
from arbor.core.tasks.split import EVAL_SEED_OFFSET
from arbor.reward import check, verify
from arbor.reward.arithmetic import evaluate

DATA = Path("/work/shared/data")
needs_data = pytest.mark.skipif(not (DATA / "gsm8k_test.jsonl").is_file(), reason="shared data not present")


def synthetic_tasks() -> list[Countdown | Arith]:
    return [
        Countdown(CountdownConfig(min_numbers=3, max_numbers=4), eval_size=100),
        Arith(ArithConfig(min_ops=2, max_ops=4), eval_size=100),
    ]


# --- gold traces ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("task", synthetic_tasks(), ids=lambda t: t.name)
def test_every_gold_trace_verifies(task: Countdown | Arith) -> None:
    for level in range(task.num_levels):
        mix = [1.0 if i == level else 0.0 for i in range(task.num_levels)]
        for index in range(300):
            p = task.train_problem(index, mix)
            assert p.level == level and p.task == task.name
            assert p.prompt.endswith(STEP_SEP) and STEP_SEP not in p.prompt[:-1]
            verdict = check(task.name, p.solution, p.reference)
            assert verdict.correct, (p.prompt, p.solution, verdict.reason)
    for p in task.eval_problems():
        assert verify(task.name, p.solution, p.reference)


def test_countdown_problem_shape() -> None:
    cfg = CountdownConfig(min_numbers=3, max_numbers=5, max_operand=25, max_target=100, min_steps=2)
    task = Countdown(cfg, eval_size=20)
    assert task.num_levels == 3
    for index in range(60):
        p = task.train_problem(index)
        numbers, target = p.reference["numbers"], p.reference["target"]
        assert len(numbers) == 3 + p.level
        assert all(1 <= n <= 25 for n in numbers) and 1 <= target <= 100 and target not in numbers
        steps = p.solution.split(STEP_SEP)[:-1]
        assert len(steps) >= 2 and len(steps) == len(solve(numbers, target))
        assert p.prompt == f"Use {' '.join(map(str, numbers))} to make {target}.\n"
        assert p.key == f"countdown:{','.join(map(str, sorted(numbers)))}->{target}"
        assert verify("countdown", p.solution, p.reference)


def _fewest_steps_brute_force(numbers: list[int], target: int) -> int | None:
    """Breadth-first search over pools, with no pruning at all (the independent reference)."""
    frontier = {tuple(sorted(numbers))}
    for depth in range(len(numbers)):
        if any(target in pool for pool in frontier):
            return depth
        nxt = set()
        for pool in frontier:
            for i in range(len(pool)):
                for j in range(len(pool)):
                    if i == j:
                        continue
                    a, b = pool[i], pool[j]
                    rest = [x for k, x in enumerate(pool) if k not in (i, j)]
                    results = [a + b, a * b] + ([a - b] if a >= b else []) + ([a // b] if b and a % b == 0 else [])
                    nxt.update(tuple(sorted(rest + [r])) for r in results)
        frontier = nxt
    return None


def test_countdown_solver_is_shortest() -> None:
    rng = random.Random(0)
    for _ in range(150):
        numbers = [rng.randint(1, 12) for _ in range(rng.choice([3, 4]))]
        target = rng.randint(1, 60)
        expected = _fewest_steps_brute_force(numbers, target)
        steps = solve(numbers, target)
        assert (steps is None) == (expected is None), (numbers, target)
        if steps is not None:
            assert len(steps) == expected, (numbers, target, steps)
            response = STEP_SEP.join([*steps, f"Answer: {target}"])
            assert verify("countdown", response, {"numbers": numbers, "target": target}) or target in numbers


def test_countdown_solver_style() -> None:
    assert solve([13, 7, 25, 3], 25) == []
    assert solve([1, 1], 100) is None
    assert solve([7, 20], 13) == ["20-7=13"]
    assert solve([7, 13], 20) == ["13+7=20"]
    assert solve([4, 20], 5) == ["20/4=5"]
    assert solve([3, 5, 7], 22) == solve([7, 5, 3], 22)  # independent of the order the numbers are given in


def test_arith_trace_order() -> None:
    steps, value = solve_chain([12, 7, 3, 5], ["+", "x", "-"])
    assert steps == ["7x3=21", "12+21=33", "33-5=28"] and value == 28
    steps, value = solve_chain([2, 3, 4, 5, 6], ["+", "x", "x", "-"])
    assert steps == ["3x4=12", "12x5=60", "2+60=62", "62-6=56"] and value == 2 + 3 * 4 * 5 - 6
    task = Arith(ArithConfig(min_ops=2, max_ops=4, max_operand=20), eval_size=10)
    for index in range(100):
        p = task.train_problem(index)
        text = p.prompt.removeprefix("Compute ").removesuffix(".\n")
        assert sum(text.count(op) for op in "+-x") == 2 + p.level
        assert p.reference["answer"] == evaluate(text).value


# --- held-out sets ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("task", synthetic_tasks(), ids=lambda t: t.name)
def test_eval_set_is_fixed_and_disjoint(task: Countdown | Arith) -> None:
    again = type(task)(task.cfg, eval_size=100)
    held_out = task.eval_problems()
    assert held_out == again.eval_problems()
    assert len(held_out) == 100 and len({p.key for p in held_out}) == 100
    assert held_out[0].uid == f"{task.name}/eval/0"
    train_keys = {task.train_problem(i).key for i in range(2000)}
    assert not train_keys & {p.key for p in held_out}
    assert [task.train_problem(i) for i in range(50)] == [again.train_problem(i) for i in range(50)]
    other_seed = type(task)(task.cfg, eval_size=100, eval_seed=1000).eval_problems()
    assert [p.key for p in other_seed] != [p.key for p in held_out]


def test_eval_mix_and_train_bounds() -> None:
    task = Countdown(CountdownConfig(min_numbers=3, max_numbers=4), eval_size=30, eval_mix=[0.0, 1.0])
    assert {p.level for p in task.eval_problems()} == {1}
    with pytest.raises(ValueError, match="training problem index"):
        task.train_problem(EVAL_SEED_OFFSET)
    with pytest.raises(ValueError, match="2 non-negative weights"):
        task.train_problem(0, [1.0])
    levels = Counter(pick_level(random.Random(i), 2, [3.0, 1.0]) for i in range(2000))
    assert 1300 < levels[0] < 1700


def test_five_numbers_work() -> None:
    task = Countdown(CountdownConfig(min_numbers=5, max_numbers=5, min_steps=3), eval_size=3)
    for index in range(10):
        p = task.train_problem(index)
        assert len(p.reference["numbers"]) == 5 and p.meta["min_steps"] >= 3
        assert verify("countdown", p.solution, p.reference)


# --- corruption -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("task", synthetic_tasks(), ids=lambda t: t.name)
def test_corrupt_traces_fail(task: Countdown | Arith) -> None:
    rng = random.Random(0)
    for index in range(400):
        p = task.train_problem(index)
        bad = task.corrupt(p.solution, rng)
        changed = [(a, b) for a, b in zip(p.solution.split("\n"), bad.split("\n"), strict=True) if a != b]
        assert len(changed) == 1, (p.solution, bad)
        assert not verify(task.name, bad, p.reference), (p.prompt, p.solution, bad)


# --- JSONL ------------------------------------------------------------------------------------------------


def _write(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def _gsm8k_row(i: int) -> dict:
    return {"question": f"What is {i} + 1?", "answer": f"{i} + 1 = <<{i}+1={i + 1}>>{i + 1}\n#### {i + 1}"}


def test_jsonl_gsm8k_format(tmp_path: Path) -> None:
    path = _write(tmp_path / "g.jsonl", [_gsm8k_row(i) for i in range(10)])
    task = JsonlTask("gsm8k", DataConfig(path=str(path), eval_fraction=0.2))
    held_out = task.eval_problems()
    assert [p.uid for p in held_out] == ["gsm8k/g.jsonl:9", "gsm8k/g.jsonl:10"]
    p = task.train_problem(0)
    assert p.prompt == "What is 0 + 1?\n"
    assert p.solution == "0 + 1 = 1\nAnswer: 1" and p.reference == {"answer": "1"}
    assert task.train_problem(8) == p  # cycles through the 8 training rows
    assert task.num_levels == 1 and len(task.train_dataset) == 8
    assert not verify("gsm8k", task.corrupt(p.solution, random.Random(0)), p.reference)


def test_jsonl_math_format(tmp_path: Path) -> None:
    row = {"problem": "Find $x$.", "solution": "So $x = \\boxed{3}$.\n\nDone.", "answer": "3"}
    path = _write(tmp_path / "m.jsonl", [row, row | {"problem": "Find $y$."}])
    task = build_task(TaskConfig(name="math", data=DataConfig(path=str(path), eval_fraction=0.5)))
    p = task.train_problem(0)
    assert p.solution == "So $x = \\boxed{3}$.\nDone.\nAnswer: 3"
    assert verify("math", p.solution, p.reference)
    assert not verify("math", task.corrupt(p.solution, random.Random(0)), p.reference)
    assert [q.prompt for q in task.eval_problems()] == ["Find $y$.\n"]


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([], r"e\.jsonl: empty data file"),
        (["", "   "], r"e\.jsonl: empty data file"),
        ([{"answer": "#### 1"}], r"no usable rows: 1 skipped, the first: .*e\.jsonl:1: row has no 'question'"),
        (["[1, 2]", '{"question": "q", "answer": '], r"2 skipped, the first: .*e\.jsonl:1: expected a JSON object"),
        ([{"question": "q", "answer": "#### "}], r"e\.jsonl:1: empty answer"),
    ],
)
def test_jsonl_without_usable_rows_names_file_and_line(tmp_path: Path, rows: list, message: str) -> None:
    path = _write(tmp_path / "e.jsonl", rows)
    with pytest.raises(DataError, match=message):
        JsonlTask("gsm8k", DataConfig(path=str(path)))


def test_jsonl_bad_rows_are_skipped_counted_and_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    good = [_gsm8k_row(i) for i in range(4)]
    rows = [good[0], {"question": "no answer"}, good[1], "", '{"question": "q", "answer": ', good[2], "[1]", good[3]]
    path = _write(tmp_path / "e.jsonl", rows)
    with caplog.at_level("WARNING", logger="arbor.data"):
        task = JsonlTask("gsm8k", DataConfig(path=str(path), eval_fraction=0.25))
    assert task.skipped == 3
    assert [p.uid for p in task.eval_problems()] == ["gsm8k/e.jsonl:8"]  # line numbers are the file's own
    assert len(task.train_dataset) == 3
    logged = caplog.text
    assert "e.jsonl:2: row has no 'answer' field" in logged
    assert "e.jsonl:5: invalid JSON" in logged and "e.jsonl:7: expected a JSON object" in logged


def test_jsonl_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such data file"):
        JsonlTask("gsm8k", DataConfig(path=str(tmp_path / "nope.jsonl")))


@needs_data
def test_real_gold_traces_verify() -> None:
    gsm8k = JsonlTask(
        "gsm8k",
        DataConfig(path=str(DATA / "gsm8k_train.jsonl"), eval_path=str(DATA / "gsm8k_test.jsonl")),
        eval_size=None,
    )
    math = JsonlTask("math", DataConfig(path=str(DATA / "math500_test.jsonl")), eval_size=None)
    rng = random.Random(0)
    for task in (gsm8k, math):
        problems = [task.train_problem(i) for i in range(len(task.train_dataset))] + task.eval_problems()
        assert all(p.solution and "<<" not in p.solution for p in problems)
        for p in problems:
            assert verify(task.name, p.solution, p.reference), (p.uid, p.solution[-200:], p.reference)
            assert not verify(task.name, task.corrupt(p.solution, rng), p.reference), p.uid
    assert len(gsm8k.eval_problems()) == 1319 and len(math.eval_problems()) == 50


def test_build_task() -> None:
    assert isinstance(build_task(TaskConfig(name="countdown")), Countdown)
    assert isinstance(build_task(TaskConfig(name="arith")), Arith)
    with pytest.raises(ValueError, match="unknown task 'chess'"):
        build_task(TaskConfig(name="chess"))


def test_generated_tasks_take_the_chat_template_with_a_worked_exchange() -> None:
    from arbor.core.config import DataConfig, TaskConfig
    from arbor.core.errors import DataError
    from arbor.core.tasks import build_task
    from arbor.core.tokenizer import build_char_tokenizer

    tokenizer = build_char_tokenizer()
    tokenizer.chat_template = "{% for m in messages %}<u>{{ m['content'] }}</u>{% endfor %}<a>"
    for name in ("countdown", "arith"):
        plain = build_task(TaskConfig(name=name, eval_size=4))
        chat = build_task(TaskConfig(name=name, eval_size=4, data=DataConfig(template="chat")), tokenizer)
        for a, b in zip(
            plain.eval_problems() + [plain.train_problem(7)], chat.eval_problems() + [chat.train_problem(7)]
        ):
            assert (a.key, a.reference, a.solution) == (b.key, b.reference, b.solution)  # the same problem
            assert b.prompt.startswith("<u>") and b.prompt.endswith(f"{a.prompt.strip()}</u><a>")
            assert "Answer:" in b.prompt  # the hint says how the verifier reads a response
            shown, answer = chat.example  # one worked exchange: a training problem with its solver trace
            assert f"<u>{shown}</u><u>{answer}</u>" in b.prompt and answer.splitlines()[-1].startswith("Answer:")
            assert shown.splitlines()[-1] not in {p.prompt.strip() for p in plain.eval_problems()}
    with pytest.raises(DataError, match="no chat template"):
        build_task(TaskConfig(data=DataConfig(template="chat")), build_char_tokenizer())
    with pytest.raises(DataError, match="few_shot"):
        build_task(TaskConfig(data=DataConfig(template="few_shot")), tokenizer)
