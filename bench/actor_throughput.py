"""How fast a rollout actor searches: trees per second on the problems it draws, at several settings, one run.

    python bench/actor_throughput.py MODEL_DIR [key=value ...] [--problems 256] [--rounds 2] [--variants V]

``MODEL_DIR`` is the RL init (an ``arbor sft`` checkpoint); ``key=value`` overrides apply to every variant
(the trial settings of docs/training-notes.md, say). ``--variants`` is a ``;``-separated list, each a
``,``-separated list of further overrides (empty: the config as is); the default compares HF's forward and the
lean decode path (``search.lean_decode``) at 64 trees in flight with the config's wider batch (256 trees, 1,024
rows a call)::

    search.lean_decode=false,search.trees_in_flight=64,search.max_batch_rows=256 ;
    search.trees_in_flight=64,search.max_batch_rows=256 ; (the config)

Every variant searches the same problems, the first ``--problems`` the actors search (one actor by default: its shard;
held-out and SFT-pool problems passed over, as the actor does), from the same weights with a fresh backend seeded with
``train.seed`` and the actor's one torch thread; rounds alternate the variants, so the machine's drift falls
on all of them. Per variant: trees/s, generated tokens/s, tokens forwarded per model call (prefill and decode;
wider batches forward more rows a call), the share of trees with a correct leaf (what the self-imitation
archive gets) and trees/s against the first variant's (the median over rounds). The search runs without a
learner beside it, so the figures are the actor's ceiling on this machine: in ``arbor train`` the learner
shares the cores. The last line printed is JSON.
"""

from __future__ import annotations

import itertools
import json
import statistics
import sys
import time
from pathlib import Path

import torch
from common import machine, option  # bench/ is on sys.path

from arbor.actors.journey import best_leaf
from arbor.actors.search import HFStepBackend, run_searches, training_scorers
from arbor.core.config import ArborConfig, load_config
from arbor.core.model import build_policy, value_head_for
from arbor.core.tasks import Problem, build_task
from arbor.core.tasks.split import problems_to_skip

sys.path.insert(0, str(Path(__file__).resolve().parent))
from learning import oracle_stream  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
NARROW = "search.trees_in_flight=64,search.max_batch_rows=256"  # the recipe before 2026-12-03's night
DEFAULT_VARIANTS = f"search.lean_decode=false,{NARROW};{NARROW};"


def actor_problems(cfg: ArborConfig, count: int) -> list[Problem]:
    """The first ``count`` problems the config's rollout actors search, in their order (one actor by default:
    its shard), held-out and SFT-pool content passed over as the actors do."""
    task = build_task(cfg.task)
    skip = problems_to_skip(cfg, task)
    return list(itertools.islice((p for p in oracle_stream(cfg, task) if p.key not in skip), count))


def measure(cfg: ArborConfig, model, tokenizer, head, problems: list[Problem]) -> dict:
    """One timed search of ``problems`` with ``cfg``'s settings and a fresh backend."""
    backend = HFStepBackend.configured(model, tokenizer, head, cfg, seed=cfg.train.seed)
    t0 = time.perf_counter()
    trees = run_searches(backend, problems, cfg.search, training_scorers)
    seconds = time.perf_counter() - t0
    return {
        "seconds": seconds,
        "trees_per_s": len(trees) / seconds,
        "generated_tokens_per_s": backend.tokens_generated / seconds,
        "tokens_generated": backend.tokens_generated,
        "tokens_per_model_call": backend.tokens_forwarded / max(1, backend.model_calls),
        "solved": sum(best_leaf(t) is not None for t in trees) / len(trees),
    }


def main(argv: list[str]) -> dict:
    count, argv = option(argv, "--problems", "256")
    rounds, argv = option(argv, "--rounds", "2")
    spec, argv = option(argv, "--variants", DEFAULT_VARIANTS)
    if not argv:
        raise SystemExit("usage: actor_throughput.py MODEL_DIR [key=value ...] [--problems N] [--rounds R]")
    model_dir, overrides = argv[0], argv[1:]
    config = REPO / "configs" / "countdown_tiny.yaml"
    variants = [[o.strip() for o in v.split(",") if o.strip()] for v in spec.split(";")]
    cfgs = [load_config(config, [f"model.path={model_dir}", *overrides, *v]) for v in variants]
    torch.set_num_threads(cfgs[0].resources.actor_threads)
    model, tokenizer = build_policy(cfgs[0].model)
    head = value_head_for(model, model_dir)
    problems = actor_problems(cfgs[0], int(count))
    print(f"{len(problems)} problems of the actors' shards, {len(variants)} variants x {rounds} rounds")
    runs: list[list[dict]] = [[] for _ in variants]
    for r in range(int(rounds)):
        for i, cfg in enumerate(cfgs):
            runs[i].append(m := measure(cfg, model, tokenizer, head, problems))
            print(
                f"round {r} [{','.join(variants[i]) or 'config'}] {m['trees_per_s']:.2f} trees/s "
                f"{m['generated_tokens_per_s']:.0f} tok/s {m['tokens_per_model_call']:.1f} tok/call "
                f"solved {m['solved']:.3f}"
            )
    rows = {}
    for v, measured in zip(variants, runs):
        row = {k: statistics.median(m[k] for m in measured) for k in measured[0]}
        row["tokens_generated"] = measured[0]["tokens_generated"]  # a search's tokens do not vary by round
        rows[",".join(v) or "config"] = row
    first = next(iter(rows.values()))["trees_per_s"]
    for row in rows.values():
        row["trees_per_s_vs_first"] = row["trees_per_s"] / first
    result = {"problems": len(problems), "rounds": int(rounds), "variants": rows, "overrides": overrides, **machine()}
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
