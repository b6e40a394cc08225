"""PRM benchmark on countdown_tiny: SFT a policy, train a PRM from its search trees, then search with it.

    python bench/prm.py [CONFIG] [key=value ...]          # default: configs/countdown_tiny.yaml, ~12 min on 2 cores
    python bench/prm.py --policy runs/sft-.../checkpoints/sft   # skip SFT, start from that policy
    python bench/prm.py --policy ... --prm runs/prm-.../checkpoints/prm   # skip the PRM too: measure that one

Stages: ``arbor sft`` (the recipe's steps, no before/after evaluation) unless ``--policy`` names a
checkpoint; ``arbor prm`` on it, labelling Math-Shepherd completion trees (``search.kind=shepherd``:
``PRM_CHAINS`` chains per problem, ``PRM_COMPLETIONS`` more completions from every step) of
``prm.problems`` training problems with soft labels and a regression head on the frozen policy trunk;
then, on the held-out problems, with one torch thread and the PRM as the only value source:

- ``prm_step_auc``: on the trees of problems kept out of the PRM fit, the AUC of the PRM's score of each
  step against its hard label (does any completion from it end right).
- ``prm_beam_accuracy``: beam search of width ``BEAM_WIDTH`` guided by the PRM (``search.leaf_value=prm``).
- ``best_of_n_accuracy``: best-of-N with N the fewest chains whose generated tokens per problem reach the
  beam's, so the two are compared at equal generated tokens (best-of-N gets at least as many).

Both pick their answer by ``ANSWER_BY`` (PRM-weighted majority vote over finished responses); the
accuracy under every answer rule is printed too. The last line printed is JSON.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
import time
from pathlib import Path

import torch
from common import option  # bench/ is on sys.path

from arbor.actors.search import HFStepBackend, Scorers, run_searches
from arbor.actors.search.scaling import accuracy, accuracy_by_rule
from arbor.core.config import load_config
from arbor.core.model import build_policy
from arbor.core.tasks import build_task
from arbor.core.tree import search_stats
from arbor.launch.commands import run_sft
from arbor.launch.prm import run_prm
from arbor.reward.prm_checkpoint import load_prm

BEAM_WIDTH = 8  # candidates per beam round; search.children of them per kept node
ANSWER_BY = "value_vote"
RULES = ("value", "vote", "value_vote")
PRM_CHAINS, PRM_COMPLETIONS = 4, 3
BENCH = [
    "prm.problems=512",
    "prm.label=soft",
    "prm.loss=regression",
    "search.children=4",
    "search.trees_in_flight=16",
]


def main(argv: list[str]) -> dict:
    policy, argv = option(argv, "--policy")
    prm_path, argv = option(argv, "--prm")
    config = argv[0] if argv and "=" not in argv[0] else "configs/countdown_tiny.yaml"
    overrides = argv[1:] if argv and "=" not in argv[0] else argv
    root = Path("runs") / f"bench-prm-{time.strftime('%Y%m%d-%H%M%S')}"
    base = ["wandb.mode=disabled", f"run.root={root}", *BENCH, *overrides]
    t0 = time.time()
    if policy is None:
        policy = run_sft(load_config(config, [*base, "sft.eval_before_after=false"]))["checkpoint"]
    sft_s = time.time() - t0
    shepherd = [
        "search.kind=shepherd",
        f"search.best_of_n.num_samples={PRM_CHAINS}",
        f"search.children={PRM_COMPLETIONS}",
        "threads=1",
        f"model.path={policy}",
    ]
    if prm_path is None:
        prm_report = run_prm(load_config(config, [*base, *shepherd]))
    else:  # the report arbor prm wrote beside that checkpoint
        prm_report = json.loads((Path(prm_path).parents[1] / "prm_report.json").read_text()) | {"checkpoint": prm_path}
    prm_s = time.time() - t0 - sft_s

    torch.set_num_threads(1)  # search is many small matrix products: one thread each beats two fighting
    cfg = load_config(
        config,
        [
            *base,
            "threads=1",
            f"model.path={policy}",
            f"prm.path={prm_report['checkpoint']}",
            "search.leaf_value=prm",
            "search.terminal_value=value_head",
            "search.mcts.dirichlet_eps=0",
            f"search.answer_by={ANSWER_BY}",
        ],
    )
    model, tokenizer = build_policy(cfg.model)
    problems = build_task(cfg.task).eval_problems()
    prm = load_prm(cfg.prm.path)
    scorers = Scorers(prm=prm.scorer())

    def search(search_cfg):
        # a fresh backend (same seed) per search: best-of-N samples the same chains whatever ran before it,
        # so runs with different PRMs differ only where the PRM acts
        backend = HFStepBackend.configured(model, tokenizer, None, cfg, seed=cfg.search.seed)
        return run_searches(backend, problems, search_cfg, lambda p: scorers)

    print(f"policy and PRM ready after {time.time() - t0:.0f} s; measuring on {len(problems)} problems")

    beam_cfg = dataclasses.replace(cfg.search, kind="beam", beam=dataclasses.replace(cfg.search.beam, width=BEAM_WIDTH))
    beam = search(beam_cfg)
    beam_tokens = search_stats(beam)["search/tokens_generated_per_tree"]
    # best-of-N at the beam's token spend: N from a first run's tokens per chain, raised until it reaches it
    n = BEAM_WIDTH
    while True:
        bon_cfg = dataclasses.replace(
            cfg.search, kind="best_of_n", best_of_n=dataclasses.replace(cfg.search.best_of_n, num_samples=n)
        )
        bon = search(bon_cfg)
        bon_tokens = search_stats(bon)["search/tokens_generated_per_tree"]
        if bon_tokens >= beam_tokens:
            break
        n = max(n + 1, math.ceil(n * beam_tokens / bon_tokens))
    result = {
        "problems": len(problems),
        "policy": policy,
        "prm_checkpoint": prm_report["checkpoint"],
        "prm_kind": prm_report.get("kind", "explicit"),
        "prm_trees": prm_report["trees"],
        "prm_held_out_steps": prm_report["held_out"]["steps"],
        "prm_step_auc": prm_report["held_out"]["step_auc"],
        "prm_pair_accuracy": prm_report["held_out"]["pair_accuracy"],
        "prm_soft_brier": prm_report["held_out"]["soft_brier"],
        "prm_beam_accuracy": accuracy(beam, problems),
        "best_of_n_accuracy": accuracy(bon, problems),
        "beam_width": BEAM_WIDTH,
        "best_of_n_n": n,
        "prm_beam_generated_tokens": beam_tokens,
        "best_of_n_generated_tokens": bon_tokens,
        "answer_by": ANSWER_BY,
        "prm_beam_accuracy_by_rule": accuracy_by_rule(beam, problems, RULES),
        "best_of_n_accuracy_by_rule": accuracy_by_rule(bon, problems, RULES),
        "prm_tokens_forwarded": prm.tokens_forwarded,
        "sft_seconds": sft_s,
        "prm_seconds": prm_s,
        "seconds": time.time() - t0,
        "run_root": cfg.run.root,
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
