"""The bodies of ``arbor sft`` and ``arbor eval``; the CLI parses arguments and calls these."""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from actors.evaluate import EvalResult, evaluate
from core.config import ArborConfig
from core.model import build_policy, save_checkpoint
from core.runs import RunLogger, make_run_dir
from core.tasks import build_task
from launch.report import console, progress_bar, results_table
from learner.sft import train_sft


def _prepare(cfg: ArborConfig, command: str):
    """Everything a command starts from: task, held-out set, policy, run directory and logger.

    Inputs are checked (task data, model directory) before the run directory is created, so bad
    input leaves nothing behind.
    """
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    task = build_task(cfg.task)
    held_out = task.eval_problems()
    model, tokenizer = build_policy(cfg.model)
    run_dir = make_run_dir(cfg, command)
    return task, held_out, model, tokenizer, run_dir, RunLogger(run_dir, cfg, command)


def _write_eval(run_dir: Path, name: str, result: EvalResult) -> Path:
    path = run_dir / f"eval_{name}.json"
    path.write_text(json.dumps(result.to_json(), indent=2))
    return path


def run_sft(cfg: ArborConfig) -> dict:
    """SFT warm start on solver traces, with held-out evaluation of the init and of the result."""
    task, held_out, model, tokenizer, run_dir, logger = _prepare(cfg, "sft")
    n_params = sum(p.numel() for p in model.parameters())
    console.print(f"[bold]arbor sft[/] task={cfg.task.name} params={n_params / 1e6:.2f}M run={run_dir}")
    results: dict[str, EvalResult] = {}
    try:
        if cfg.sft.eval_before_after:
            with console.status("evaluating the init model"):
                results["init"] = evaluate(model, tokenizer, held_out, cfg.eval)
            logger.log(results["init"].metrics("eval_init"), step=0)
            _write_eval(run_dir, "init", results["init"])
        t0 = time.time()
        with progress_bar() as bar:
            job = bar.add_task("sft", total=cfg.sft.steps, info="")

            def on_step(step: int, metrics: dict[str, float]) -> None:
                info = f"loss {metrics['sft/loss']:.3f} {metrics['sft/tokens_per_s']:.0f} tok/s"
                bar.update(job, advance=1, info=info)
                if not console.is_terminal and step % max(1, cfg.sft.steps // 10) == 0:
                    console.print(f"sft step {step}/{cfg.sft.steps} {info}")  # logs and CI get progress too
                if step % 10 == 0 or step == cfg.sft.steps:
                    logger.log(metrics, step=step)

            try:
                model = train_sft(model, tokenizer, task, cfg, {p.key for p in held_out}, on_step=on_step)
            except KeyboardInterrupt:
                # Keep what was trained: the update happens in place on `model`.
                partial = save_checkpoint(
                    run_dir / "checkpoints" / "sft-interrupted", model, tokenizer, meta={"command": "sft"}
                )
                console.print(f"interrupted; the partly trained model is at {partial}")
                raise
        train_s = time.time() - t0
        ckpt = save_checkpoint(
            run_dir / "checkpoints" / "sft", model, tokenizer, meta={"command": "sft", "steps": cfg.sft.steps}
        )
        summary: dict = {"checkpoint": str(ckpt), "sft_seconds": train_s}
        if cfg.sft.eval_before_after:
            with console.status("evaluating the SFT model"):
                results["sft"] = evaluate(model, tokenizer, held_out, cfg.eval)
            logger.log(results["sft"].metrics("eval"), step=cfg.sft.steps)
            _write_eval(run_dir, "sft", results["sft"])
            console.print(results_table(f"{cfg.task.name}: held-out ({len(held_out)} problems)", results))
            summary |= {f"{name}_greedy_accuracy": r.greedy_accuracy for name, r in results.items()}
        logger.summary(summary)
    finally:
        logger.close()
    console.print(f"checkpoint: {ckpt}\nrun directory: {run_dir}")
    return summary


def run_eval(cfg: ArborConfig) -> EvalResult:
    """Evaluate ``model.path`` (or the untrained default model) on the held-out set."""
    _, held_out, model, tokenizer, run_dir, logger = _prepare(cfg, "eval")
    try:
        with console.status(f"evaluating {cfg.model.path or 'the untrained default model'}"):
            result = evaluate(model, tokenizer, held_out, cfg.eval)
        logger.log(result.metrics("eval"), step=0)
        logger.summary(result.metrics("eval"))
        path = _write_eval(run_dir, "result", result)
    finally:
        logger.close()
    console.print(results_table(f"{cfg.task.name}: held-out ({len(held_out)} problems)", {"model": result}))
    console.print(f"results: {path}")
    return result
