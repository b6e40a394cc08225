"""Multi-step arithmetic: evaluate a chain like ``12+7x3-5`` with the usual precedence.

Prompt and gold trace (every ``x`` first, left to right, then ``+``/``-`` left to right)::

    Compute 12+7x3-5.
    7x3=21
    12+21=33
    33-5=28
    Answer: 28
"""

from __future__ import annotations

import random

from arbor.core.config import ArithConfig
from arbor.core.tasks.base import (
    ANSWER_PREFIX,
    STEP_SEP,
    GeneratedTask,
    Problem,
)

NAME = "arith"
OPS = "+-x"


def _apply(a: int, op: str, b: int) -> int:
    return a * b if op == "x" else a + b if op == "+" else a - b


def solve_chain(operands: list[int], ops: list[str]) -> tuple[list[str], int]:
    """Gold steps and value of ``operands[0] ops[0] operands[1] ...`` (x before + and -)."""
    values, pending, steps = list(operands), list(ops), []
    while "x" in pending:
        i = pending.index("x")
        value = values[i] * values[i + 1]
        steps.append(f"{values[i]}x{values[i + 1]}={value}")
        values[i : i + 2] = [value]
        del pending[i]
    total = values[0]
    for op, b in zip(pending, values[1:], strict=True):
        value = _apply(total, op, b)
        steps.append(f"{total}{op}{b}={value}")
        total = value
    return steps, total


def expression(operands: list[int], ops: list[str]) -> str:
    """The chain as written in the prompt, e.g. ``12+7x3-5``."""
    return "".join(f"{a}{op}" for a, op in zip(operands[:-1], ops, strict=True)) + str(operands[-1])


class Arith(GeneratedTask):
    """Arithmetic chains from a seed; level L has ``min_ops + L`` operators."""

    name = NAME
    negative_values = True

    def __init__(
        self, cfg: ArithConfig, eval_size: int = 200, eval_seed: int = 0, eval_mix: list[float] | None = None
    ) -> None:
        if not 1 <= cfg.min_ops <= cfg.max_ops or cfg.max_operand < 1:
            raise ValueError(f"arith needs 1 <= min_ops <= max_ops and max_operand >= 1; got {cfg}")
        self.cfg = cfg
        self.num_levels = cfg.max_ops - cfg.min_ops + 1
        super().__init__(eval_size, eval_seed, eval_mix)

    def generate(self, rng: random.Random, level: int, uid: str) -> Problem:
        """One chain with ``min_ops + level`` operators drawn from ``rng``."""
        count = self.cfg.min_ops + level
        operands = [rng.randint(1, self.cfg.max_operand) for _ in range(count + 1)]
        ops = [rng.choice(OPS) for _ in range(count)]
        steps, answer = solve_chain(operands, ops)
        text = expression(operands, ops)
        return Problem(
            task=NAME,
            uid=uid,
            key=f"{NAME}:{text}",
            prompt=f"Compute {text}.{STEP_SEP}",
            reference={"answer": answer},
            solution=STEP_SEP.join([*steps, f"{ANSWER_PREFIX}{answer}"]),
            level=level,
        )
