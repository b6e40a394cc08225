"""Tasks: where problems, gold traces and verifier references come from."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from arbor.core.config import TaskConfig
from arbor.core.tasks import countdown
from arbor.core.tasks.arith import Arith
from arbor.core.tasks.base import STEP_SEP, Problem, Task
from arbor.core.tasks.chat import ChatPrompts
from arbor.core.tasks.countdown import Countdown

__all__ = ["TASKS", "Problem", "Task", "build_task", "journey_format", "step_separator"]

# (reference, branches, answer line) -> one response in the task's journey format: each branch a list of step
# lines from the start, dead ends first and the successful branch last (see core.tasks.countdown)
JourneyWriter = Callable[[dict[str, Any], list[list[str]], str], str]
JOURNEYS: dict[str, JourneyWriter] = {
    "countdown": lambda reference, branches, answer: countdown.journey_response(reference["numbers"], branches, answer),
}

DATA_TASKS = ("gsm8k", "math")


def _generated(task: Task, cfg: TaskConfig, tokenizer: Any) -> Task:
    return task if cfg.data.template == "plain" else ChatPrompts(task, cfg.data, tokenizer)


def _countdown(cfg: TaskConfig, tokenizer: Any = None) -> Task:
    task = Countdown(cfg.countdown, eval_size=cfg.eval_size, eval_seed=cfg.eval_seed, eval_mix=cfg.eval_mix)
    return _generated(task, cfg, tokenizer)


def _arith(cfg: TaskConfig, tokenizer: Any = None) -> Task:
    task = Arith(cfg.arith, eval_size=cfg.eval_size, eval_seed=cfg.eval_seed, eval_mix=cfg.eval_mix)
    return _generated(task, cfg, tokenizer)


def _jsonl(cfg: TaskConfig, tokenizer: Any = None) -> Task:
    from arbor.core.tasks.jsonl import JsonlTask  # imports `datasets`, which only data tasks need

    return JsonlTask(cfg.name, cfg.data, eval_size=cfg.eval_size, tokenizer=tokenizer)


TASKS: dict[str, Callable[[TaskConfig, Any], Task]] = {
    "countdown": _countdown,
    "arith": _arith,
    "gsm8k": _jsonl,
    "math": _jsonl,
}


def build_task(cfg: TaskConfig, tokenizer: Any = None) -> Task:
    """The task named by ``cfg.name``, built from its section of the config.

    ``tokenizer`` (the policy's) supplies the chat template of ``task.data.template=chat`` when
    ``task.data.tokenizer`` names none.
    """
    if cfg.name not in TASKS:
        raise ValueError(f"unknown task '{cfg.name}'; expected one of {', '.join(TASKS)}")
    return TASKS[cfg.name](cfg, tokenizer)


def step_separator(cfg: TaskConfig) -> str:
    """What ends one reasoning step of this task: a newline, or a blank line for ``task.data.steps=paragraph``."""
    if cfg.name in DATA_TASKS and cfg.data.steps == "paragraph":
        return "\n\n"
    return STEP_SEP


def journey_format(name: str) -> JourneyWriter | None:
    """How task ``name`` writes a search tree as one response (``train.journey``), or None where it has no
    journey format (it can still train with ``train.journey.mode=shortcut``)."""
    return JOURNEYS.get(name)
