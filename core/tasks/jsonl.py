"""GSM8K- and MATH-style problems from JSONL files, handed to ``datasets``.

Each row needs a question and an answer field. GSM8K's answer field holds a worked solution ending in
``#### N``: N is the reference, the text before it (calculator annotations ``<<48/2=24>>`` removed) is
the gold trace. MATH rows carry a separate ``solution``. Either way the gold trace is one step per line
(``task.data.steps=line``) or per paragraph (``paragraph``), followed by ``Answer: <answer>``.

A row that cannot be used (invalid JSON, not an object, no question or answer, an empty answer) never
stops a run: it is skipped, counted (``skipped``) and logged with its file and line. Only a file with no
usable row at all is an error.

Prompts (``task.data.template``): ``plain`` is the question and a newline; ``few_shot`` puts the first
``few_shot`` rows of ``path`` (question and gold trace) in front, and those rows are neither trained on
nor evaluated; ``chat`` wraps the question in the model's chat template.
"""

from __future__ import annotations

import json
import logging
import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from transformers import PreTrainedTokenizerBase

from arbor.core.config import DataConfig
from arbor.core.errors import DataError
from arbor.core.tasks.base import ANSWER_PREFIX, STEP_SEP, Problem
from arbor.core.tasks.chat import chat_prompt, chat_tokenizer
from arbor.core.tasks.split import check_train_index

log = logging.getLogger("arbor.data")
STEP_SEPARATORS = {"line": "\n", "paragraph": "\n\n"}
MAX_LOGGED_SKIPS = 20  # per file: past this, skipped rows are only counted


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
_BLANK_LINES = re.compile(r"\n\s*\n")


def as_steps(text: str, steps: str = "line") -> list[str]:
    """The steps of a worked solution: its non-empty lines, or its paragraphs (lines kept inside)."""
    if steps == "paragraph":
        parts = [p.strip() for p in _BLANK_LINES.split(text)]
        return ["\n".join(line.strip() for line in p.splitlines() if line.strip()) for p in parts if p]
    return [line.strip() for line in text.splitlines() if line.strip()]


class Skips:
    """Rows skipped in one file: logged (the first ``MAX_LOGGED_SKIPS``) and counted."""

    def __init__(self) -> None:
        self.messages: list[str] = []

    def add(self, message: str) -> None:
        if len(self.messages) < MAX_LOGGED_SKIPS:
            log.warning("skipping a data row: %s", message)
        self.messages.append(message)


def read_jsonl(path: str | Path, skips: Skips) -> list[tuple[int, dict[str, Any]]]:
    """(line number, row) for every JSON-object line; anything else is skipped as file:line."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such data file")
    rows: list[tuple[int, dict[str, Any]]] = []
    with path.open(encoding="utf-8", errors="replace") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                skips.add(f"{path}:{number}: invalid JSON: {exc.msg} (column {exc.colno})")
                continue
            if not isinstance(row, dict):
                skips.add(f"{path}:{number}: expected a JSON object, got {type(row).__name__}")
                continue
            rows.append((number, row))
    return rows


def question_key(task: str, cfg: DataConfig) -> str:
    """The field holding a row's question: ``task.data.question_key``, else the task's default."""
    return cfg.question_key or _DEFAULTS[task].question_key


def problem_key(task: str, question: str) -> str:
    """A problem's identity: its task and whitespace-normalised question (what keeps train and eval apart)."""
    return f"{task}:{' '.join(question.split())}"


def _field(row: dict[str, Any], key: str, where: str) -> str:
    if key not in row or row[key] is None:
        raise DataError(f"{where}: row has no '{key}' field (keys: {', '.join(sorted(row)) or 'none'})")
    return str(row[key])


def _record(task: str, fmt: _Format, row: dict[str, Any], where: str, uid: str, steps: str) -> dict[str, Any]:
    """Question, reference answer and gold trace (or None) of one row; DataError names ``where``."""
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
    sep = STEP_SEPARATORS[steps]
    solution = None if worked is None else sep.join([*as_steps(worked, steps), f"{ANSWER_PREFIX}{answer}"])
    key = problem_key(task, question)
    return {"uid": uid, "key": key, "question": question, "answer": answer, "solution": solution}


def load_records(task: str, path: str | Path, fmt: _Format, steps: str = "line") -> tuple[list[dict[str, Any]], int]:
    """(usable records of a JSONL file, rows skipped); DataError only when no row is usable."""
    skips = Skips()
    name = Path(path).name
    records = []
    for number, row in read_jsonl(path, skips):
        try:
            records.append(_record(task, fmt, row, f"{path}:{number}", f"{task}/{name}:{number}", steps))
        except DataError as exc:
            skips.add(str(exc))
    if not records and skips.messages:
        raise DataError(f"{path}: no usable rows: {len(skips.messages)} skipped, the first: {skips.messages[0]}")
    if not records:
        raise DataError(f"{path}: empty data file (no rows)")
    if len(skips.messages) > MAX_LOGGED_SKIPS:
        log.warning("%s: %d rows skipped in all", path, len(skips.messages))
    return records, len(skips.messages)


def _wrong_answer(answer: str, rng: random.Random) -> str:
    """A different answer: its first integer nudged, else a marker appended.

    The first, because later ones can be a base subscript (``2516_8``), which math-verify ignores.
    """
    m = _INT.search(answer)
    if m is None:
        return f"{answer}+1"
    value = int(m.group()) + rng.choice([d for d in range(-9, 10) if d])
    return f"{answer[: m.start()]}{value}{answer[m.end() :]}"


class PromptTemplate:
    """Turns a question into the prompt text (``task.data.template``)."""

    def __init__(self, cfg: DataConfig, examples: list[dict[str, Any]], tokenizer: PreTrainedTokenizerBase | None):
        self.kind = cfg.template
        self.prefix = "".join(f"{r['question']}{STEP_SEP}{r['solution']}{STEP_SEP}{STEP_SEP}" for r in examples)
        self.tokenizer = chat_tokenizer(cfg, tokenizer) if self.kind == "chat" else tokenizer

    def __call__(self, question: str) -> str:
        if self.kind == "chat":
            return chat_prompt(self.tokenizer, question)
        return f"{self.prefix}{question}{STEP_SEP}"


class JsonlTask:
    """Problems read from JSONL (``gsm8k`` or ``math``); one difficulty level."""

    num_levels = 1

    def __init__(
        self,
        name: str,
        cfg: DataConfig,
        eval_size: int | None = None,
        tokenizer: PreTrainedTokenizerBase | None = None,
    ) -> None:
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
        self.step_sep = STEP_SEPARATORS[cfg.steps]
        records, self.skipped = load_records(name, cfg.path, fmt, cfg.steps)
        examples: list[dict[str, Any]] = []
        if cfg.template == "few_shot":
            examples = [r for r in records if r["solution"]][: cfg.few_shot]
            if len(examples) < cfg.few_shot:
                raise DataError(f"{cfg.path}: task.data.few_shot={cfg.few_shot} needs that many rows with a solution")
            records = [r for r in records if r not in examples]
        template = PromptTemplate(cfg, examples, tokenizer)
        if cfg.eval_path:
            held_out, skipped = load_records(name, cfg.eval_path, fmt, cfg.steps)
            self.skipped += skipped
        else:
            count = round(len(records) * cfg.eval_fraction)
            if cfg.eval_fraction < 1.0:
                count = min(len(records) - 1, count)  # keep at least one training row
            records, held_out = records[: len(records) - count], records[len(records) - count :]
        if eval_size is not None:
            held_out = held_out[:eval_size]
        held_out_keys = {r["key"] for r in held_out} | {r["key"] for r in examples}
        # the same question in both files would leak the held-out answer into training
        records = [r for r in records if r["key"] not in held_out_keys]
        if not records and cfg.eval_fraction < 1.0:
            raise DataError(f"{cfg.path}: no training rows left outside the held-out set")
        for r in records + held_out:
            r["prompt"] = template(r["question"])
        self.train_dataset = datasets.Dataset.from_list(records) if records else None
        self.eval_dataset = datasets.Dataset.from_list(held_out) if held_out else None
        self._train = [self._problem(r) for r in records]
        self._eval = [self._problem(r) for r in held_out]
        self._path = cfg.path

    def _problem(self, record: dict[str, Any]) -> Problem:
        return Problem(
            task=self.name,
            uid=record["uid"],
            key=record["key"],
            prompt=record["prompt"],
            reference={"answer": record["answer"]},
            solution=record["solution"],
        )

    def train_problem(self, index: int, level_mix: list[float] | None = None) -> Problem:
        """The index-th training problem, cycling through the training rows."""
        if not self._train:
            raise DataError(f"{self._path}: no training rows (task.data.eval_fraction=1 holds every row out)")
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
