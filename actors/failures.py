"""Why a policy's answers fail: each wrong response filed under the first fault the verifier finds, and
greedy decoding with every step's arithmetic forced right (Countdown and arith steps ``a op b = c``).

The model still chooses every operand and operator under forced decoding, so its accuracy against plain
greedy says how much of the gap is arithmetic and how much is the plan. ``bench/failures.py`` runs both on
a checkpoint's held-out set.
"""

from __future__ import annotations

import re

import torch

from arbor.core.tasks import Problem
from arbor.core.tasks.base import ANSWER_PREFIX, STEP_SEP
from arbor.reward.arithmetic import ParseError, evaluate
from arbor.reward.verifiers import check

KINDS = {  # a fragment of the verifier's reason -> the fault's name
    "left side equals": "arithmetic",
    "not available": "unavailable number",
    "is not the target": "answer is not the target",
    "was not produced by the steps": "claims the target",
    "no answer line": "no answer",
}
STEP_LHS = re.compile(r"[0-9+\-*/x() ]+=$")  # a step's left side, just closed by '='


def fault(problem: Problem, response: str) -> str:
    """The first fault in a response (``ok`` when it is right); a wrong result that equals the target is
    told apart, since that is the model steering to the answer rather than computing."""
    verdict = check(problem.task, response, problem.reference)
    if verdict.correct:
        return "ok"
    kind = next((name for frag, name in KINDS.items() if frag in verdict.reason), "malformed")
    if kind == "arithmetic":
        step = re.search(r"'([^']*)'", verdict.reason)
        claimed = step.group(1).rsplit("=", 1)[-1].strip() if step else ""
        if claimed == str(problem.reference["target"]):
            kind = "arithmetic (wrote the target)"
    return kind


@torch.no_grad()
def forced_arithmetic_greedy(model, tokenizer, prompt: str, max_new_tokens: int) -> str:
    """Greedy decoding in which every step's result is its true value instead of the model's."""
    ids = tokenizer.encode(prompt, add_special_tokens=False)
    text, added = prompt, 0
    while added < max_new_tokens:
        token = int(model(input_ids=torch.tensor([ids])).logits[0, -1].argmax())
        if token == tokenizer.eos_token_id:
            break
        text += tokenizer.decode([token])
        added += 1
        line = text.rsplit(STEP_SEP, 1)[-1]
        if line.startswith(ANSWER_PREFIX.strip()) and text.endswith(STEP_SEP):
            break
        if STEP_LHS.fullmatch(line) and not line.startswith(ANSWER_PREFIX.strip()):
            try:
                text += f"{evaluate(line[:-1]).value}{STEP_SEP}"
            except ParseError:
                pass  # not a computable left side (e.g. division with a remainder): leave the model to it
        ids = tokenizer.encode(text, add_special_tokens=False)
    return text[len(prompt) :]
