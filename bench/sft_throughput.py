"""SFT throughput: a plain PyTorch loop against the DeepSpeed engine the learner uses, in one run.

    python bench/sft_throughput.py [CONFIG] [key=value ...]     # default: configs/countdown_tiny.yaml

Both engines train the same default model on the same pre-built SFT batches. Timed rounds alternate
between them so machine noise hits both alike. MFU = model FLOPs per second (PaLM's 6N + 12·L·d·T per
token, real tokens only, padding not counted) over the fp32 matrix-product peak measured in this run.
The last line printed is JSON.
"""

from __future__ import annotations

import json
import sys
import time

import torch

from arbor.core.config import load_config
from arbor.core.flops import matmul_peak, train_flops_per_token
from arbor.core.model import build_policy
from arbor.core.tasks import build_task
from arbor.learner.engine import OptimConfig, build_engine
from arbor.learner.sft import sft_batches


def main(argv: list[str]) -> dict:
    config = argv[0] if argv and "=" not in argv[0] else "configs/countdown_tiny.yaml"
    overrides = [a for a in argv if "=" in a]
    cfg = load_config(config, overrides)
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    task = build_task(cfg.task)
    rounds, steps_per_round, warmup = 4, 5, 3
    _, tokenizer = build_policy(cfg.model)
    stream = sft_batches(task, tokenizer, cfg, exclude_keys={p.key for p in task.eval_problems()})
    batches = [next(stream) for _ in range(warmup + rounds * steps_per_round)]

    engines = {}
    for kind in ("torch", "deepspeed"):
        model, _ = build_policy(cfg.model)
        optim = OptimConfig(cfg.sft.lr, cfg.sft.weight_decay, cfg.sft.grad_clip, cfg.sft.warmup_steps, 1000)
        engines[kind] = build_engine(model, kind, optim, batch_size=cfg.sft.batch_size, zero_stage=cfg.sft.zero_stage)

    def run(engine, chunk) -> None:
        for b in chunk:
            loss = engine(input_ids=b.input_ids, attention_mask=b.attention_mask, labels=b.labels).loss
            engine.step(loss)

    for engine in engines.values():
        run(engine, batches[:warmup])
    seconds = dict.fromkeys(engines, 0.0)
    for r in range(rounds):
        chunk = batches[warmup + r * steps_per_round : warmup + (r + 1) * steps_per_round]
        for kind, engine in engines.items():
            t0 = time.perf_counter()
            run(engine, chunk)
            seconds[kind] += time.perf_counter() - t0

    timed = batches[warmup:]
    tokens = sum(b.num_tokens for b in timed)
    mean_len = tokens / sum(b.input_ids.shape[0] for b in timed)
    flops_per_token = train_flops_per_token(engines["torch"].module, int(round(mean_len)))
    peak = matmul_peak(sizes=(1024,))  # its figures in BENCHMARKS.md are against the 1024x1024 rate
    tps = {k: tokens / s for k, s in seconds.items()}
    result = {
        "params": sum(p.numel() for p in engines["torch"].module.parameters()),
        "batch_size": cfg.sft.batch_size,
        "zero_stage": cfg.sft.zero_stage,
        "matmul_peak_gflops": peak / 1e9,
        "torch_tokens_per_s": tps["torch"],
        "deepspeed_tokens_per_s": tps["deepspeed"],
        "deepspeed_vs_torch": tps["deepspeed"] / tps["torch"],
        "mfu_torch": tps["torch"] * flops_per_token / peak,
        "mfu_deepspeed": tps["deepspeed"] * flops_per_token / peak,
    }
    for k, v in result.items():
        print(f"{k:>24}: {v:.4g}" if isinstance(v, float) else f"{k:>24}: {v}")
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
