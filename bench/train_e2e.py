"""End-to-end training benchmark: the default recipe's `arbor train`, async and then sync, in one run.

    python bench/train_e2e.py [CONFIG] [key=value ...]     # default: configs/countdown_tiny.yaml

1. ``arbor train CONFIG`` exactly as ``make run`` runs it (SFT warm start in-process, then asynchronous
   actor-learner RL on a local Ray for ``train.steps`` learner steps).
2. The same RL phase again with ``train.mode=sync`` from the same SFT checkpoint (``train.init=model``) and
   the same resources, for the same wall-time budget the async phase took (``train.max_wall_s``), so the
   two throughputs are measured side by side.

The last line printed is JSON with ``init_accuracy`` and ``trained_accuracy`` (held-out greedy of the SFT
init and of the async-trained policy), ``max_trained_lag`` (largest version gap any trained sample had),
``max_policy_lag`` (the bound), ``buffer_dropped`` (items evicted untrained), and
``async_vs_sync_samples_per_s`` (samples trained per second of RL, async over sync).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from arbor.core.config import load_config
from arbor.launch.train import run_train


def main(argv: list[str]) -> dict:
    config = argv[0] if argv and not argv[0].startswith(("-", "train.", "model.")) and "=" not in argv[0] else None
    overrides = argv[1:] if config else argv
    config = config or "configs/countdown_tiny.yaml"
    stamp = time.strftime("%Y%m%d-%H%M%S")
    t0 = time.time()
    async_run = run_train(load_config(config, [*overrides, f"run.name=bench-train-{stamp}-async"]))
    async_seconds = time.time() - t0
    init = str(Path(async_run["run_dir"]) / "checkpoints" / "init")
    sync_cfg = [
        *overrides,
        f"train.max_wall_s={async_run['rl_seconds']:.1f}",
        "train.steps=1000000",
        f"run.name=bench-train-{stamp}-sync",
        "train.mode=sync",
        "train.init=model",
        f"model.path={init}",
        "train.eval_search_simulations=0",  # its accuracy is not the point: keep the evaluations short
    ]
    sync_run = run_train(load_config(config, sync_cfg))
    cfg = load_config(config, overrides)
    result = {
        "init_accuracy": async_run["before"]["greedy_accuracy"],
        "trained_accuracy": async_run["after"]["greedy_accuracy"],
        "init_search_accuracy": async_run["before"].get("search_accuracy"),
        "trained_search_accuracy": async_run["after"].get("search_accuracy"),
        "max_trained_lag": async_run["max_trained_lag"],
        "max_policy_lag": cfg.buffer.max_policy_lag,
        "buffer_dropped": async_run["buffer_dropped"],
        "async_samples_per_s": async_run["samples_per_s"],
        "sync_samples_per_s": sync_run["samples_per_s"],
        "async_vs_sync_samples_per_s": async_run["samples_per_s"] / max(sync_run["samples_per_s"], 1e-9),
        "async_steps": async_run["steps"],
        "sync_steps": sync_run["steps"],
        "sync_trained_accuracy": sync_run["after"]["greedy_accuracy"],
        "rl_seconds_each": async_run["rl_seconds"],
        "train_command_seconds": async_seconds,
        "total_seconds": time.time() - t0,
        "runs": [async_run["run_dir"], sync_run["run_dir"]],
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
