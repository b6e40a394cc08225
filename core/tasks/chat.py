"""Prompts through a chat model's own template (``task.data.template=chat``), for every task.

Data tasks wrap each question; generated tasks (countdown, arith) put one worked exchange first (a
format hint and a training problem, answered with its solver trace), since an instruct model asked "Use 3
5 11 to make 26." has no way to know that Arbor's verifier reads one ``a op b=c`` step per line and a final
``Answer:`` line. The template is the policy tokenizer's, or the one in ``task.data.tokenizer``.
"""

from __future__ import annotations

import dataclasses
import random
from typing import Any

from arbor.core.config import DataConfig
from arbor.core.errors import DataError
from arbor.core.tasks.base import Problem, Task

HINTS = {
    "countdown": (
        "Reach the target with the given numbers, each used at most once, and + - * / (exact division only). "
        "Write one step per line, like 3*5=15, and finish with a line 'Answer: <the target>'."
    ),
    "arith": (
        "Compute the expression, one operation per line with its result, like 12+7=19, multiplication before "
        "addition and subtraction, and finish with a line 'Answer: <the value>'."
    ),
}


def chat_tokenizer(cfg: DataConfig, tokenizer: Any) -> Any:
    """The tokenizer whose chat template renders prompts: ``task.data.tokenizer``'s, else the policy's; a
    DataError when it has none."""
    if cfg.tokenizer:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(cfg.tokenizer, local_files_only=True)
    if getattr(tokenizer, "chat_template", None) is None:
        where = cfg.tokenizer or "the policy's tokenizer"
        raise DataError(f"task.data.template=chat: {where} has no chat template (task.data.tokenizer)")
    return tokenizer


def chat_prompt(tokenizer: Any, text: str, example: tuple[str, str] | None = None) -> str:
    """``text`` as the user's turn, with the assistant's turn opened; ``example`` (a question and its worked
    answer) goes before it as an earlier exchange."""
    messages = []
    if example is not None:
        messages += [{"role": "user", "content": example[0]}, {"role": "assistant", "content": example[1]}]
    messages.append({"role": "user", "content": text})
    return str(tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True))


class ChatPrompts:
    """A generated task whose problems are the same (keys, references, traces) but whose prompts are chat
    turns: one worked exchange (the format hint and a training problem, answered with its solver trace),
    then the problem. A small instruct model given the hint alone copies the hint's own example
    ("12+7=19") whatever it is asked; a worked exchange shows the format on a problem of the task."""

    def __init__(self, task: Task, cfg: DataConfig, tokenizer: Any):
        if cfg.template == "few_shot":
            raise DataError(f"task.data.template=few_shot needs a data task; {task.name} has no worked examples file")
        self.task, self.tokenizer = task, chat_tokenizer(cfg, tokenizer)
        self.name, self.num_levels = task.name, task.num_levels
        held_out = {p.key for p in task.eval_problems()}
        shown = next(p for p in map(task.train_problem, range(1000)) if p.key not in held_out and p.solution)
        self.example = (f"{HINTS[task.name]}\n{shown.prompt.strip()}", shown.solution.strip())

    def _chat(self, problem: Problem) -> Problem:
        return dataclasses.replace(problem, prompt=chat_prompt(self.tokenizer, problem.prompt.strip(), self.example))

    def train_problem(self, index: int, level_mix: list[float] | None = None) -> Problem:
        return self._chat(self.task.train_problem(index, level_mix))

    def eval_problems(self) -> list[Problem]:
        return [self._chat(p) for p in self.task.eval_problems()]

    def corrupt(self, solution: str, rng: random.Random) -> str:
        return self.task.corrupt(solution, rng)

    def hindsight(self, problem: Problem, steps: list[str]) -> Problem | None:
        """The wrapped task's relabelled problem (see ``Countdown.hindsight``), its prompt a chat turn too."""
        relabel = getattr(self.task, "hindsight", None)
        found = relabel(problem, steps) if relabel is not None else None
        return self._chat(found) if found is not None else None
