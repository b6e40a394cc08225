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
import sys
import time
from collections import Counter
from pathlib import Path

import torch

from arbor.actors.failures import fault, forced_arithmetic_greedy
from arbor.core.config import load_config
from arbor.core.model import build_policy
from arbor.core.tasks import build_task

REPO = Path(__file__).resolve().parents[1]


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
