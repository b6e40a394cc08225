"""RL recipe trial without Ray: search a round of trees, train on it, publish, repeat, in one process.

    python bench/rl_trial.py MODEL_DIR [key=value ...]     # MODEL_DIR: an SFT checkpoint (arbor sft)
    python bench/rl_trial.py runs/sft-.../checkpoints/sft train.steps=40 train.batch_size=512 \
        train.error_buffer=1024 train.lr=1e-4 train.global_advantage=1.0 task.eval_size=400

The same pieces as ``arbor train`` (``HFStepBackend`` search, ``tree_to_samples``, the
``ActorCriticLearner`` update, weights loaded back into the backend after every step) in a synchronous
loop, so a recipe (learning rate, batch, advantages, temperature) can be judged in minutes on 2 cores
before a full run. ``ROUND_TREES`` problems are searched per round and every sample is trained on once;
a round's leftovers (fewer than a batch) open the next round's first batch, so a round that yields less
than a batch is not wasted. It evaluates the policy before and after on the held-out set:
greedy accuracy and pass@1 of ``SAMPLES`` temperature-1 samples, and greedy accuracy every ``EVAL_EVERY``
steps in between (the learning curve of one long run). The last line printed is JSON.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import random
import sys
import time

import torch

from arbor.actors.evaluate import evaluate
from arbor.actors.search import (
    HFStepBackend,
    run_searches,
    scale_advantages,
    training_scorers,
    tree_to_samples,
)
from arbor.core.channels import split_published
from arbor.core.config import load_config
from arbor.core.model import ValueHead, build_policy, hidden_size_of, load_value_head
from arbor.core.tasks import build_task
from arbor.core.tasks.split import problems_to_skip
from arbor.learner.actor_critic import ActorCriticLearner

ROUND_TREES = int(os.environ.get("ROUND_TREES", "64"))  # problems searched per round
SAMPLES = int(os.environ.get("SAMPLES", "8"))  # temperature-1 samples per held-out problem for pass@1
EVAL_EVERY = int(os.environ.get("EVAL_EVERY", "0"))  # greedy held-out accuracy every this many steps (0: ends only)
OFFSET = 3 << 30  # training problems from a stretch of seeds no other command uses


def _window(search_s: float, train_s: float) -> dict:
    return {"trees": 0, "tokens": 0, "nodes": 0, "outcomes": [], "search_s": search_s, "train_s": train_s}


def main(argv: list[str]) -> dict:
    model_dir, overrides = argv[0], argv[1:]
    cfg = load_config("configs/countdown_tiny.yaml", [f"model.path={model_dir}", "train.engine=torch", *overrides])
    torch.set_num_threads(cfg.threads or 2)
    task = build_task(cfg.task)
    held_out = task.eval_problems()
    skip_keys = problems_to_skip(cfg, task)  # held out, and the SFT demonstrations when sft.num_problems is set
    model, tokenizer = build_policy(cfg.model)
    head = load_value_head(model_dir, model) or ValueHead(hidden_size_of(model))
    eval_cfg = dataclasses.replace(cfg.eval, num_samples=SAMPLES, ks=[1])
    before = evaluate(model, tokenizer, held_out, eval_cfg)
    backend = HFStepBackend(copy.deepcopy(model), tokenizer, copy.deepcopy(head), seed=cfg.search.seed)
    t = cfg.train
    learner = ActorCriticLearner(
        model,
        head,
        t,
        pad_id=tokenizer.pad_token_id,
        max_len=cfg.model.max_seq_len,
        temperature=cfg.search.temperature,
        rank_batch_size=t.batch_size,
    )
    rng = random.Random(t.seed)
    index, step, search_s, train_s = OFFSET, 0, 0.0, 0.0
    window = _window(0.0, 0.0)  # what the rounds since the last progress line searched, and from when
    greedy_cfg = dataclasses.replace(cfg.eval, num_samples=0)
    curve = [(0, before.greedy_accuracy)]
    pool: list = []  # samples not trained on yet, oldest first
    while step < t.steps:
        problems = []
        while len(problems) < ROUND_TREES:
            p = task.train_problem(index)
            index += 1
            if p.key not in skip_keys:
                problems.append(p)
        t0 = time.perf_counter()
        trees = run_searches(backend, problems, cfg.search, training_scorers)
        search_s += time.perf_counter() - t0
        window["trees"] += len(trees)
        window["tokens"] += sum(tree.tokens_generated for tree in trees)
        window["nodes"] += sum(len(tree.nodes) for tree in trees)
        fresh = [
            s
            for tree in trees
            for s in scale_advantages(
                tree, tree_to_samples(tree, t.value_head_weight, t.global_advantage), t.advantage_scale
            )
        ]
        window["outcomes"] += [n.outcome for tree in trees for n in tree.terminals() if n.outcome is not None]
        rng.shuffle(fresh)
        pool += fresh
        while len(pool) >= t.batch_size and step < t.steps:
            batch, pool = pool[: t.batch_size], pool[t.batch_size :]
            t0 = time.perf_counter()
            metrics = learner.update(batch, step)
            train_s += time.perf_counter() - t0
            step += 1
            backend.load_weights(step, *split_published(learner.publish_state()))
            if step % 10 == 0:
                w = window
                leaf_accuracy = sum(w["outcomes"]) / len(w["outcomes"])
                print(
                    f"step {step} loss {metrics['learner/loss']:.4f} leaf accuracy {leaf_accuracy:.3f}"
                    f" | {w['trees']:.0f} trees: {w['tokens'] / w['trees']:.0f} tokens, {w['nodes'] / w['trees']:.1f}"
                    f" nodes each; search {search_s - w['search_s']:.0f} s, train {train_s - w['train_s']:.0f} s",
                    flush=True,
                )
                window = _window(search_s, train_s)
            if EVAL_EVERY and step % EVAL_EVERY == 0 and step < t.steps:
                acc = evaluate(learner.model, tokenizer, held_out, greedy_cfg).greedy_accuracy
                curve.append((step, acc))
                print(f"step {step} held-out greedy {acc:.4f}", flush=True)
    after = evaluate(learner.model, tokenizer, held_out, eval_cfg)
    result = {
        "init_greedy": before.greedy_accuracy,
        "trained_greedy": after.greedy_accuracy,
        "init_pass@1": before.pass_at[1],
        "trained_pass@1": after.pass_at[1],
        "steps": step,
        "greedy_curve": [*curve, (step, after.greedy_accuracy)],
        "search_seconds": search_s,
        "train_seconds": train_s,
        "overrides": overrides,
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
