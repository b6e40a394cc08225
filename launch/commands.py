"""The bodies of ``arbor sft``, ``arbor value`` and ``arbor eval``; the CLI parses arguments and calls these."""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from arbor.actors.evaluate import EvalResult, evaluate, given_responses, score_responses
from arbor.actors.search import (
    HFStepBackend,
    ScalingPoint,
    Scorers,
    evaluation_scorers,
    run_searches,
    scaling_curve,
    scaling_table,
    training_scorers,
)
from arbor.core.config import ArborConfig
from arbor.core.errors import ConfigError
from arbor.core.model import VALUE_HEAD_FILE, build_policy, load_value_head, save_checkpoint
from arbor.core.runs import RunLogger, make_run_dir
from arbor.core.tasks import DATA_TASKS, Problem, build_task, step_separator
from arbor.core.tasks.jsonl import question_key
from arbor.core.tasks.split import problems_to_skip
from arbor.launch.report import advance, console, plot_scaling, progress_bar, results_table, value_table
from arbor.learner.sft import train_sft
from arbor.learner.value_fit import (
    LabelledSequence,
    fit_value_head,
    labelled_chains,
    prefix_features,
    split_by_group,
    value_problems,
    value_report,
    value_sampling_config,
)
from arbor.reward.prm_checkpoint import load_prm


def prepare(cfg: ArborConfig, command: str):
    """Everything a command starts from: task, held-out set, policy, run directory and logger.

    Inputs are checked (task data, model directory) before the run directory is created, so bad
    input leaves nothing behind.
    """
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    model, tokenizer = build_policy(cfg.model)
    task = build_task(cfg.task, tokenizer)
    held_out = task.eval_problems()
    if command in ("sft", "value", "prm"):  # they use the SFT pool: one larger than the task stops here
        problems_to_skip(cfg, task)
    run_dir = make_run_dir(cfg, command)
    return task, held_out, model, tokenizer, run_dir, RunLogger(run_dir, cfg, command)


def _write_eval(run_dir: Path, name: str, result: EvalResult) -> Path:
    path = run_dir / f"eval_{name}.json"
    path.write_text(json.dumps(result.to_json(), indent=2))
    return path


def run_sft(cfg: ArborConfig) -> dict:
    """SFT warm start on solver traces, with held-out evaluation of the init and of the result."""
    task, held_out, model, tokenizer, run_dir, logger = prepare(cfg, "sft")
    n_params = sum(p.numel() for p in model.parameters())
    pool = f" demonstrations={cfg.sft.num_problems}" if cfg.sft.num_problems else ""
    console.print(f"[bold]arbor sft[/] task={cfg.task.name}{pool} params={n_params / 1e6:.2f}M run={run_dir}")
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
                advance(bar, job, step, cfg.sft.steps, "sft", info)
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


def run_value(cfg: ArborConfig) -> dict:
    """Fit the value head of ``model.path`` the OVM way and save policy + head as a checkpoint."""
    if not cfg.model.path:
        raise ConfigError("arbor value needs config key 'model.path' (the policy checkpoint, e.g. an SFT one)")
    task, held_out, model, tokenizer, run_dir, logger = prepare(cfg, "value")
    v = cfg.value
    console.print(
        f"[bold]arbor value[/] policy={cfg.model.path} problems={v.problems}x{v.samples_per_problem} run={run_dir}"
    )
    try:
        problems = value_problems(task, cfg)
        sampling = value_sampling_config(cfg)
        backend = HFStepBackend.configured(model, tokenizer, None, cfg, seed=v.seed)
        seqs: list[LabelledSequence] = []
        t0 = time.time()
        with progress_bar() as bar:
            job = bar.add_task("sample", total=len(problems), info="")
            chunk = sampling.trees_in_flight * 2
            for start in range(0, len(problems), chunk):
                trees = run_searches(backend, problems[start : start + chunk], sampling, training_scorers)
                seqs += [s for t in trees for s in labelled_chains(t)]
                rate = sum(s.outcome for s in seqs) / max(len(seqs), 1)
                bar.update(job, advance=len(trees), info=f"{len(seqs)} samples, {rate:.1%} correct")
        sample_s = time.time() - t0
        fit, held = split_by_group(seqs, v.holdout_fraction, v.seed)
        with console.status("reading the frozen trunk's hidden states"):
            pad = tokenizer.pad_token_id or 0
            fit_x = prefix_features(model, fit, v.forward_batch_size, pad)
            held_x = prefix_features(model, held, v.forward_batch_size, pad)
        with progress_bar() as bar:
            job = bar.add_task("value", total=v.steps, info="")

            def on_step(step: int, metrics: dict[str, float]) -> None:
                advance(bar, job, step, v.steps, "value", f"loss {metrics['value/loss']:.4f}")
                if step % 10 == 0 or step == v.steps:
                    logger.log(metrics, step=step)

            head = fit_value_head(fit_x, v, on_step=on_step)
        report = {
            "fit": value_report(head, fit_x, v.calibration_bins),
            "held_out": value_report(head, held_x, v.calibration_bins),
            "samples": len(seqs),
            "sample_accuracy": sum(s.outcome for s in seqs) / max(len(seqs), 1),
            "sample_seconds": sample_s,
        }
        (run_dir / "value_report.json").write_text(json.dumps(report, indent=2))
        ckpt = save_checkpoint(
            run_dir / "checkpoints" / "value",
            model,
            tokenizer,
            value_head=head,
            meta={"command": "value", "policy": cfg.model.path, "held_out": _scalars(report["held_out"])},
        )
        report["checkpoint"] = str(ckpt)
        summary = {"checkpoint": str(ckpt), "sample_accuracy": report["sample_accuracy"]}
        summary |= {f"value_held_out/{k}": x for k, x in _scalars(report["held_out"]).items()}
        logger.log({k: x for k, x in summary.items() if isinstance(x, float)}, step=v.steps)
        logger.summary(summary)
    finally:
        logger.close()
    console.print(value_table(report))
    console.print(f"checkpoint: {ckpt}\nrun directory: {run_dir}")
    return report


def _scalars(report: dict) -> dict[str, float]:
    return {k: float(x) for k, x in report.items() if isinstance(x, (int, float))}


def _check_scaling_inputs(cfg: ArborConfig) -> None:
    """Test-time scaling values terminals with the value head or the PRM (never the reference): one must exist."""
    if not cfg.search.budgets or cfg.search.leaf_value == "prm":
        return
    if not cfg.model.path or not (Path(cfg.model.path) / VALUE_HEAD_FILE).is_file():
        raise ConfigError(
            f"search.budgets needs a value head: config key 'model.path' ({cfg.model.path}) must be a checkpoint "
            f"with {VALUE_HEAD_FILE}; fit one with `arbor value CONFIG model.path=DIR`"
        )


def run_scaling(
    cfg: ArborConfig,
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    held_out: list[Problem],
    run_dir: Path,
    logger: RunLogger,
) -> list[ScalingPoint]:
    """Accuracy against search budget on the held-out set: table, ``scaling.json``, ``scaling.png``, wandb image."""
    head = load_value_head(cfg.model.path, model) if cfg.model.path else None  # checked unless a PRM values states
    backend = HFStepBackend.configured(model, tokenizer, head, cfg, seed=cfg.search.seed)
    scorers = evaluation_scorers
    if cfg.search.leaf_value == "prm":
        prm = load_prm(cfg.prm.path, step_separator(cfg.task)).scorer()
        scorers = lambda problem: Scorers(prm=prm)  # noqa: E731 - the same PRM for every problem
    with console.status(f"test-time scaling: {', '.join(cfg.search.kinds)} at budgets {list(cfg.search.budgets)}"):
        points = scaling_curve(backend, held_out, cfg.search, kinds=cfg.search.kinds, scorers_for=scorers)
    console.print(scaling_table(points))
    rows = [dataclasses.asdict(p) for p in points]
    (run_dir / "scaling.json").write_text(json.dumps({"problems": len(held_out), "points": rows}, indent=2))
    png = plot_scaling(points, run_dir / "scaling.png", title=f"{cfg.task.name}: held-out ({len(held_out)} problems)")
    for budget in sorted({p.budget for p in points}):
        logger.log(
            {
                f"scaling/{p.kind}/{k}": r[k]
                for p, r in zip(points, rows)
                if p.budget == budget
                for k in ("accuracy", "generated_tokens", "model_calls")
            },
            step=budget,
        )
    logger.log_image("scaling/plot", png, step=max(p.budget for p in points))
    return points


def run_eval(cfg: ArborConfig) -> EvalResult:
    """Evaluate ``model.path`` (or the untrained default model) on the held-out set; with ``search.budgets``,
    also the test-time scaling curve of every kind in ``search.kinds``."""
    _check_scaling_inputs(cfg)
    task, held_out, model, tokenizer, run_dir, logger = prepare(cfg, "eval")
    try:
        if cfg.eval.responses:
            question_field = question_key(cfg.task.name, cfg.task.data) if cfg.task.name in DATA_TASKS else None
            given = given_responses(cfg.eval.responses, held_out, cfg.eval.response_key, question_field)
            result = score_responses(held_out, given)
            console.print(f"scored {len(given)} given responses from {cfg.eval.responses}; {result.missing} missing")
        else:
            with console.status(f"evaluating {cfg.model.path or 'the untrained default model'}"):
                result = evaluate(model, tokenizer, held_out, cfg.eval)
        logger.log(result.metrics("eval"), step=0)
        summary = result.metrics("eval") | {"data/skipped_rows": getattr(task, "skipped", 0)}
        path = _write_eval(run_dir, "result", result)
        console.print(results_table(f"{cfg.task.name}: held-out ({len(held_out)} problems)", {"model": result}))
        if cfg.search.budgets:
            points = run_scaling(cfg, model, tokenizer, held_out, run_dir, logger)
            summary |= {f"scaling/{p.kind}@{p.budget}": p.accuracy for p in points}
            console.print(f"scaling: {run_dir / 'scaling.json'} {run_dir / 'scaling.png'}")
        logger.summary(summary)
    finally:
        logger.close()
    console.print(f"results: {path}")
    return result
