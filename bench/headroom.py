"""What RL could reach from a checkpoint: the held-out problems each search solves at least once.

    python bench/headroom.py MODEL_DIR [key=value ...]     # MODEL_DIR: an SFT checkpoint (arbor sft)

RL raises greedy accuracy by making the policy's own successes more likely, so the problems its search
solves at least once (scored with the verifier, as in training) bound what sharpening can add. For each
search setting below this prints that any-correct rate on the held-out set next to greedy accuracy, with
the scored answers per tree, their accuracy, the generated tokens per problem and the search's seconds (on
the same 2 cores, one after the other), and plain best-of-N's any-correct rate at the same generated
tokens (interpolated between N = 8, 16, 32). ``search.step_checks`` rows let the task reject an illegal
step as it is written (``reward.step_fault``). A setting that finds more solved problems per second gives
the learner more signal for the same rollout time. The last line printed is JSON.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import sys
import time
from pathlib import Path

import torch

from arbor.actors.evaluate import evaluate
from arbor.actors.search import HFStepBackend, run_searches, training_scorers
from arbor.actors.search.scaling import coverage
from arbor.core.config import load_config
from arbor.core.model import build_policy, value_head_for
from arbor.core.tasks import build_task

REPO = Path(__file__).resolve().parents[1]

CHECKS = "search.step_checks=true"
CLOSE = "search.mcts.close_ended=true"  # ended steps and subtrees take no more simulations
# Every lever off, sampling at temperature 1: the rows below add one lever at a time to this
LEVERS_OFF = [
    "search.step_checks=false",
    "search.mcts.close_ended=false",
    "search.distinct_children=false",
    "search.mcts.temperature=1.0",
]
SETTINGS = {  # name -> search overrides on top of the config's search section
    "mcts (config: step checks, distinct, closed)": [],
    "mcts (config: step checks), distinct batched": ["search.distinct_batched=true"],
    "mcts, plain": LEVERS_OFF,
    "mcts, step checks": [*LEVERS_OFF, CHECKS],
    "mcts, 48 simulations": [*LEVERS_OFF, "search.mcts.simulations=48"],
    "mcts, 48, step checks": [*LEVERS_OFF, "search.mcts.simulations=48", CHECKS],
    "mcts, step checks, closed": [*LEVERS_OFF, CHECKS, CLOSE],
    "mcts, 48, step checks, closed": [*LEVERS_OFF, "search.mcts.simulations=48", CHECKS, CLOSE],
    "best_of_n, 8": [*LEVERS_OFF, "search.kind=best_of_n", "search.best_of_n.num_samples=8"],
    "best_of_n, 8, step checks": [*LEVERS_OFF, "search.kind=best_of_n", "search.best_of_n.num_samples=8", CHECKS],
    "best_of_n, 16": [*LEVERS_OFF, "search.kind=best_of_n", "search.best_of_n.num_samples=16"],
    "best_of_n, 32": [*LEVERS_OFF, "search.kind=best_of_n", "search.best_of_n.num_samples=32"],
}
PLAIN = ("best_of_n, 8", "best_of_n, 16", "best_of_n, 32")  # the sampling baseline, by its token cost


def at_tokens(rows: dict[str, dict], tokens: float) -> float | None:
    """Plain best-of-N's any-correct rate at ``tokens`` generated tokens per problem, interpolated linearly
    between the two N that bracket it (None outside the measured range)."""
    points = sorted((rows[n]["tokens_per_problem"], rows[n]["any_correct"]) for n in PLAIN if n in rows)
    for (t0, c0), (t1, c1) in zip(points, points[1:]):
        if t0 <= tokens <= t1:
            return c0 + (c1 - c0) * (tokens - t0) / max(t1 - t0, 1e-9)
    return None


def search_row(model, tokenizer, head, problems, search) -> dict:
    """One search setting on ``problems`` (verifier-scored, as in training): :func:`coverage` with its
    seconds, generated tokens and pruned steps per problem. The model is copied, so rows do not share caches."""
    backend = HFStepBackend(
        copy.deepcopy(model),
        tokenizer,
        copy.deepcopy(head),
        seed=search.seed,
        max_batch_rows=search.max_batch_rows,
        lean_decode=search.lean_decode,
    )
    t0 = time.perf_counter()
    trees = run_searches(backend, problems, search, training_scorers)
    seconds = time.perf_counter() - t0
    n = max(len(trees), 1)
    return coverage(trees) | {
        "seconds": round(seconds, 1),
        "tokens_per_problem": round(sum(t.tokens_generated for t in trees) / n, 1),
        "pruned_steps_per_problem": round(sum(t.pruned_steps for t in trees) / n, 2),
    }


def main(argv: list[str]) -> dict:
    model_dir, overrides = argv[0], argv[1:]
    config, common = REPO / "configs" / "countdown_tiny.yaml", [f"model.path={model_dir}", *overrides]
    cfg = load_config(config, common)
    torch.set_num_threads(cfg.threads or 2)
    task = build_task(cfg.task)
    held_out = task.eval_problems()
    model, tokenizer = build_policy(cfg.model)
    head = value_head_for(model, model_dir)
    greedy = evaluate(model, tokenizer, held_out, dataclasses.replace(cfg.eval, num_samples=0)).greedy_accuracy
    print(f"{len(held_out)} held-out problems, greedy accuracy {greedy:.3f}")
    rows = {}
    for name, extra in SETTINGS.items():
        search = load_config(config, [*common, *extra]).search
        rows[name] = r = search_row(model, tokenizer, head, held_out, search)
        print(
            f"{name:26s} any-correct {r['any_correct']:.3f}  answers/tree {r['answers_per_tree']:5.2f}  "
            f"answer accuracy {r['answer_accuracy']:.3f}  {r['tokens_per_problem']:7.1f} tok/problem  "
            f"{r['seconds']:6.1f} s"
        )
    for r in rows.values():  # coverage against sampling's at the same generated tokens
        plain = at_tokens(rows, r["tokens_per_problem"])
        r["best_of_n_at_equal_tokens"] = None if plain is None else round(plain, 4)
    result = {"problems": len(held_out), "greedy_accuracy": greedy, "searches": rows, "overrides": overrides}
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
