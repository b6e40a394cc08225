"""Tasks: where problems, gold traces and verifier references come from."""

from __future__ import annotations

from collections.abc import Callable

from core.config import TaskConfig
from core.tasks.arith import Arith
from core.tasks.base import Problem, Task
from core.tasks.countdown import Countdown

__all__ = ["TASKS", "Problem", "Task", "build_task"]


def _countdown(cfg: TaskConfig) -> Task:
    return Countdown(cfg.countdown, eval_size=cfg.eval_size, eval_seed=cfg.eval_seed, eval_mix=cfg.eval_mix)


def _arith(cfg: TaskConfig) -> Task:
    return Arith(cfg.arith, eval_size=cfg.eval_size, eval_seed=cfg.eval_seed, eval_mix=cfg.eval_mix)


def _jsonl(cfg: TaskConfig) -> Task:
    from core.tasks.jsonl import JsonlTask  # imports `datasets`, which only data tasks need

    return JsonlTask(cfg.name, cfg.data, eval_size=cfg.eval_size)


TASKS: dict[str, Callable[[TaskConfig], Task]] = {
    "countdown": _countdown,
    "arith": _arith,
    "gsm8k": _jsonl,
    "math": _jsonl,
}


def build_task(cfg: TaskConfig) -> Task:
    """The task named by ``cfg.name``, built from its section of the config."""
    if cfg.name not in TASKS:
        raise ValueError(f"unknown task '{cfg.name}'; expected one of {', '.join(TASKS)}")
    return TASKS[cfg.name](cfg)
