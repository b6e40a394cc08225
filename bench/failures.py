"""Why a checkpoint's greedy answers fail, and whether right arithmetic alone would fix them (Countdown).

    python bench/failures.py MODEL_DIR [key=value ...]     # MODEL_DIR: e.g. an SFT checkpoint (arbor sft)

1. Greedy decoding on the held-out set (as ``arbor eval`` does); each wrong response is filed under the
   first fault the verifier finds in it (``reward.verifiers.check``): a step's arithmetic is wrong (and
   whether the wrong result it wrote is the target), a step uses a number that is not available, the
   answer is not the target, the answer claims the target without the steps making it, no answer line,
   or a step it cannot parse.
2. The same greedy decoding with the arithmetic forced right: whenever the model has written a step's left
   side and ``=``, the step's true value (``reward.arithmetic``, no eval) is written for it and decoding goes
   on from there. The model still chooses every operand and operator, so the accuracy of this decoding
   against plain greedy says how much of the gap is arithmetic and how much is the plan.

The last line printed is JSON.
"""

from __future__ import annotations

import json
import re
import sys
import time
from collections import Counter
from pathlib import Path

import torch

from arbor.core.config import load_config
from arbor.core.model import build_policy
from arbor.core.tasks import Problem, build_task
from arbor.core.tasks.base import ANSWER_PREFIX, STEP_SEP
from arbor.reward.arithmetic import ParseError, evaluate
from arbor.reward.verifiers import check

REPO = Path(__file__).resolve().parents[1]

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


def main(argv: list[str]) -> dict:
    model_dir, overrides = argv[0], argv[1:]
    cfg = load_config(REPO / "configs" / "countdown_tiny.yaml", [f"model.path={model_dir}", *overrides])
    if cfg.task.name != "countdown":
        raise SystemExit(f"bench/failures.py reads Countdown steps; task.name is {cfg.task.name!r}")
    torch.set_num_threads(cfg.threads or 2)
    model, tokenizer = build_policy(cfg.model)
    model.eval()
    held_out = build_task(cfg.task, tokenizer).eval_problems()
    from arbor.actors.sampling import generate_responses

    t0 = time.perf_counter()
    prompts = [p.prompt for p in held_out]
    greedy = [
        r[0]
        for r in generate_responses(
            model, tokenizer, prompts, greedy=True, max_new_tokens=cfg.eval.max_new_tokens, batch_size=64
        )
    ]
    faults = Counter(fault(p, r) for p, r in zip(held_out, greedy))
    forced = [forced_arithmetic_greedy(model, tokenizer, p, cfg.eval.max_new_tokens) for p in prompts]
    forced_ok = sum(fault(p, r) == "ok" for p, r in zip(held_out, forced))
    n = len(held_out)
    result = {
        "model": model_dir,
        "problems": n,
        "greedy_accuracy": faults["ok"] / n,
        "forced_arithmetic_accuracy": forced_ok / n,
        "faults": {k: v for k, v in faults.most_common() if k != "ok"},
        "seconds": time.perf_counter() - t0,
    }
    print(
        f"{n} held-out problems: greedy {result['greedy_accuracy']:.3f}, "
        f"with the arithmetic forced right {result['forced_arithmetic_accuracy']:.3f}"
    )
    for kind, count in result["faults"].items():
        print(f"  {kind:<32} {count:>4}  ({count / n:.1%})")
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
