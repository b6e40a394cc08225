"""arbor.actors.failures: the fault kinds wrong answers are filed under, and arithmetic-forced decoding."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from arbor.actors.failures import fault as fault_of
from arbor.actors.failures import forced_arithmetic_greedy
from arbor.core.config import ModelConfig
from arbor.core.model import build_policy
from arbor.core.tasks.base import Problem

PROBLEM = Problem("countdown", "t/0", "k", "Use 2 6 2 to make 14.\n", {"numbers": [2, 6, 2], "target": 14})


@pytest.mark.parametrize(
    ("response", "kind"),
    [
        ("6*2=12\n12+2=14\nAnswer: 14", "ok"),
        ("6+2=8\n8+2=14\nAnswer: 14", "arithmetic (wrote the target)"),
        ("6+2=9\n9+2=11\nAnswer: 11", "arithmetic"),
        ("6*3=18\nAnswer: 18", "unavailable number"),
        ("6+2=8\n8+2=10\nAnswer: 10", "answer is not the target"),
        ("6+2=8\nAnswer: 14", "claims the target"),
        ("6+2=8\n8+2=10", "no answer"),
        ("six and two\nAnswer: 14", "malformed"),
    ],
)
def test_each_wrong_response_is_filed_under_its_first_fault(response, kind):
    assert fault_of(PROBLEM, response) == kind


class ScriptedModel:
    """A policy that plans fixed steps and always writes a wrong result after '=' (a real tokenizer's ids)."""

    def __init__(self, tokenizer, plan: list[str]):
        self.tokenizer, self.plan = tokenizer, plan

    def __call__(self, input_ids: torch.Tensor) -> SimpleNamespace:
        text = self.tokenizer.decode(input_ids[0].tolist())
        lines = text[len(PROBLEM.prompt) :].split("\n")
        done, current = len(lines) - 1, lines[-1]
        if done >= len(self.plan):
            nxt = self.tokenizer.eos_token
        elif current.endswith("="):
            nxt = "7"  # its own (wrong) result
        elif current == self.plan[done] or current.startswith(self.plan[done]):
            nxt = "\n"
        else:
            nxt = self.plan[done][len(current)]
        logits = torch.zeros(1, input_ids.shape[1], len(self.tokenizer))
        logits[0, -1, self.tokenizer.convert_tokens_to_ids(nxt)] = 1.0
        return SimpleNamespace(logits=logits)


def test_forced_decoding_writes_true_results_and_keeps_the_models_plan():
    tokenizer = build_policy(ModelConfig(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64))[1]
    good = ScriptedModel(tokenizer, ["6*2=", "12+2=", "Answer: 14"])
    out = forced_arithmetic_greedy(good, tokenizer, PROBLEM.prompt, max_new_tokens=60)
    assert out == "6*2=12\n12+2=14\nAnswer: 14\n"  # its own results ("7") never appear
    assert fault_of(PROBLEM, out) == "ok"
    bad_plan = ScriptedModel(tokenizer, ["6+2=", "8+2=", "Answer: 10"])
    out = forced_arithmetic_greedy(bad_plan, tokenizer, PROBLEM.prompt, max_new_tokens=60)
    assert fault_of(PROBLEM, out) == "answer is not the target"  # right arithmetic cannot rescue the plan
