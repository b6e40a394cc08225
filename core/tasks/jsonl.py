"""GSM8K- and MATH-style problems from JSONL files.

Each row needs a question and an answer field. GSM8K's answer field holds a worked solution ending in
``#### N``: N is the reference, the text before it (calculator annotations ``<<48/2=24>>`` removed) is
the gold trace. MATH rows carry a separate ``solution``. Either way the gold trace is one step per line
followed by ``Answer: <answer>``.
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.config import DataConfig
from core.errors import DataError
from core.tasks.base import ANSWER_PREFIX, STEP_SEP, Problem, check_train_index


@dataclass(frozen=True)
class _Format:
    question_key: str
    answer_key: str
    solution_key: str | None  # None: the solution lives in the answer field (GSM8K)


_DEFAULTS = {
    "gsm8k": _Format("question", "answer", None),
    "math": _Format("problem", "answer", "solution"),
}
_CALCULATOR = re.compile(r"<<[^<>]*>>")
_INT = re.compile(r"-?\d+")


def _as_steps(text: str) -> list[str]:
    """Non-empty lines of a worked solution, stripped: each one becomes a step."""
    return [line.strip() for line in text.splitlines() if line.strip()]


def read_jsonl(path: str | Path) -> list[tuple[int, dict[str, Any]]]:
    """(line number, row) for every non-blank line; DataError names file:line for anything malformed."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such data file")
    rows: list[tuple[int, dict[str, Any]]] = []
    with path.open(encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}:{number}: invalid JSON: {exc.msg} (column {exc.colno})") from None
            if not isinstance(row, dict):
                raise DataError(f"{path}:{number}: expected a JSON object, got {type(row).__name__}")
            rows.append((number, row))
    if not rows:
        raise DataError(f"{path}: empty data file (no rows)")
    return rows


def _field(row: dict[str, Any], key: str, where: str) -> str:
    if key not in row or row[key] is None:
        raise DataError(f"{where}: row has no '{key}' field (keys: {', '.join(sorted(row)) or 'none'})")
    return str(row[key])


def _record(task: str, fmt: _Format, row: dict[str, Any], where: str, uid: str) -> dict[str, Any]:
    """Question, reference answer and gold trace (or None) of one row."""
    question = _field(row, fmt.question_key, where)
    answer_text = _field(row, fmt.answer_key, where)
    worked: str | None = None
    if fmt.solution_key is not None:
        worked = str(row[fmt.solution_key]) if row.get(fmt.solution_key) is not None else None
        answer = answer_text.strip()
    elif "####" in answer_text:
        worked, answer = answer_text.rsplit("####", 1)
        worked, answer = _CALCULATOR.sub("", worked), answer.strip()
    else:
        answer = answer_text.strip()
    if not answer:
        raise DataError(f"{where}: empty answer in field '{fmt.answer_key}'")
    solution = None if worked is None else STEP_SEP.join([*_as_steps(worked), f"{ANSWER_PREFIX}{answer}"])
    key = f"{task}:{' '.join(question.split())}"
    return {"uid": uid, "key": key, "question": question, "answer": answer, "solution": solution}


def load_records(task: str, path: str | Path, fmt: _Format) -> list[dict[str, Any]]:
    """Validated records of a JSONL file."""
    name = Path(path).name
    return [_record(task, fmt, row, f"{path}:{number}", f"{task}/{name}:{number}") for number, row in read_jsonl(path)]


def _problem(task: str, record: dict[str, Any]) -> Problem:
    return Problem(
        task=task,
        uid=record["uid"],
        key=record["key"],
        prompt=f"{record['question']}{STEP_SEP}",
        reference={"answer": record["answer"]},
        solution=record["solution"],
    )


def _wrong_answer(answer: str, rng: random.Random) -> str:
    """A different answer: its first integer nudged, else a marker appended.

    The first, because later ones can be a base subscript (``2516_8``), which math-verify ignores.
    """
    m = _INT.search(answer)
    if m is None:
        return f"{answer}+1"
    value = int(m.group()) + rng.choice([d for d in range(-9, 10) if d])
    return f"{answer[: m.start()]}{value}{answer[m.end() :]}"


class JsonlTask:
    """Problems read from JSONL (``gsm8k`` or ``math``); one difficulty level."""

    num_levels = 1

    def __init__(self, name: str, cfg: DataConfig, eval_size: int | None = None) -> None:
        if name not in _DEFAULTS:
            raise ValueError(f"unknown JSONL task '{name}'; expected one of {', '.join(_DEFAULTS)}")
        if not cfg.path:
            raise DataError(f"task {name} needs a JSONL path (task.data.path)")
        import datasets  # heavy import, only for tasks that read data

        default = _DEFAULTS[name]
        fmt = _Format(
            cfg.question_key or default.question_key,
            cfg.answer_key or default.answer_key,
            cfg.solution_key or default.solution_key,
        )
        self.name = name
        records = load_records(name, cfg.path, fmt)
        if cfg.eval_path:
            held_out = load_records(name, cfg.eval_path, fmt)
        else:
            # the last eval_fraction of the file, keeping at least one training row
            count = min(len(records) - 1, round(len(records) * cfg.eval_fraction))
            records, held_out = records[: len(records) - count], records[len(records) - count :]
        if eval_size is not None:
            held_out = held_out[:eval_size]
        held_out_keys = {r["key"] for r in held_out}
        # the same question in both files would leak the held-out answer into training
        records = [r for r in records if r["key"] not in held_out_keys]
        if not records:
            raise DataError(f"{cfg.path}: no training rows left outside the held-out set")
        self.train_dataset = datasets.Dataset.from_list(records)
        self.eval_dataset = datasets.Dataset.from_list(held_out) if held_out else None
        self._train = [_problem(name, r) for r in records]
        self._eval = [_problem(name, r) for r in held_out]

    def train_problem(self, index: int, level_mix: list[float] | None = None) -> Problem:
        """The index-th training problem, cycling through the training rows."""
        return self._train[check_train_index(index) % len(self._train)]

    def eval_problems(self) -> list[Problem]:
        """The held-out rows: ``eval_path``, else the last ``eval_fraction`` of ``path``."""
        return list(self._eval)

    def corrupt(self, solution: str, rng: random.Random) -> str:
        """The trace with its answer line's value replaced by a wrong one."""
        lines = solution.split(STEP_SEP)
        # the first answer line is the one a verifier reads
        i = next(j for j, line in enumerate(lines) if line.startswith(ANSWER_PREFIX))
        lines[i] = f"{ANSWER_PREFIX}{_wrong_answer(lines[i][len(ANSWER_PREFIX) :], rng)}"
        return STEP_SEP.join(lines)
