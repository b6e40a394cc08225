"""``arbor train``: warm start, then the actor-learner RL loop, then the before/after table.

Order of work (bad input stops before anything is written or any checkpoint touched):

1. Check the inputs: the resume directory and its latest checkpoint, the buffer snapshot (parsed in full),
   the task and demonstrations; then pick the runtime (``train.mode``): ``async`` and ``sync`` start or
   join Ray and check that the cluster can hold the requested resources; ``local`` needs no Ray.
2. Warm start (``train.init=sft``: SFT in this process) and the "before" evaluation: held-out greedy and
   MCTS with the value head.
3. The loop (``arbor.launch.trainer.Trainer``): setup, train to the budget (``train.steps`` or
   ``train.max_wall_s``), the final checkpoint, cleanup.
4. The "after" evaluation, ``result.json`` and the before/after table.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any

import torch

from arbor.actors.evaluate import evaluate
from arbor.actors.search import HFStepBackend, evaluation_scorers, run_searches
from arbor.actors.search.scaling import accuracy
from arbor.core.config import ArborConfig, behaviour_temperature, to_yaml
from arbor.core.errors import ConfigError, Interrupted, RunFailed
from arbor.core.integrity import check_weights
from arbor.core.model import build_policy, build_tokenizer, model_dir, save_checkpoint, value_head_for
from arbor.core.runs import RunLogger, make_run_dir
from arbor.core.samples import demonstration_samples
from arbor.core.tasks import Problem, build_task
from arbor.core.tasks.split import problems_to_skip
from arbor.launch.checkpoints import check_resume, latest_name
from arbor.launch.report import advance, console, progress_bar, train_table
from arbor.launch.runtime import Runtime
from arbor.launch.trainer import Trainer


def make_runtime(cfg: ArborConfig) -> Runtime:
    """The runtime ``train.mode`` names: Ray for ``async`` and ``sync`` (started here, or joined), this
    process for ``local``."""
    if cfg.train.mode == "local":
        from arbor.launch.local import LocalRuntime

        return LocalRuntime(cfg)
    from arbor.launch.distributed.runtime import RayRuntime

    return RayRuntime(cfg)


def evaluate_policy(cfg: ArborConfig, path: str, held_out: list[Problem]) -> tuple[dict[str, float], list[dict]]:
    """Held-out greedy accuracy and MCTS-with-value-head accuracy of the checkpoint at ``path``, and a few
    greedy responses (prompt, response, verdict) to read."""
    model, tokenizer = build_policy(dataclasses.replace(cfg.model, path=path))
    greedy = evaluate(model, tokenizer, held_out, dataclasses.replace(cfg.eval, num_samples=0))
    out = {"greedy_accuracy": greedy.greedy_accuracy}
    sims = cfg.train.eval_search_simulations
    if sims:
        mcts = dataclasses.replace(cfg.search.mcts, simulations=sims, dirichlet_eps=0.0, token_budget=0)
        search = dataclasses.replace(
            cfg.search, kind="mcts", mcts=mcts, terminal_value="value_head", answer_by="value_vote"
        )
        head = value_head_for(model, path)
        backend = HFStepBackend.configured(model, tokenizer, head, cfg, seed=cfg.search.seed)
        trees = run_searches(backend, held_out, search, evaluation_scorers)
        out["search_accuracy"] = accuracy(trees, held_out)
        out["search_generated_tokens"] = sum(tr.tokens_generated for tr in trees) / len(trees)
    return out, greedy.samples


def warm_start(cfg: ArborConfig, run_dir, logger: RunLogger, task, held_out) -> str:
    """The RL init: SFT here (``train.init=sft``) saved as ``checkpoints/init``, or ``model.path`` as is."""
    if cfg.train.init == "model":
        return str(model_dir(cfg.model.path))  # a GGUF file: its converted directory, which every process loads
    from arbor.learner.sft import train_sft

    model, tokenizer = build_policy(cfg.model)
    with progress_bar() as bar:
        job = bar.add_task("sft", total=cfg.sft.steps, info="")

        def on_step(step: int, metrics: dict[str, float]) -> None:
            advance(bar, job, step, cfg.sft.steps, "sft", f"loss {metrics['sft/loss']:.3f}")
            if step % 10 == 0 or step == cfg.sft.steps:
                logger.log(metrics, step=step - cfg.sft.steps)  # SFT steps logged before RL step 0

        if cfg.sft.steps:
            model = train_sft(model, tokenizer, task, cfg, {p.key for p in held_out}, on_step=on_step)
    head = value_head_for(model, None)
    path = save_checkpoint(run_dir / "checkpoints" / "init", model, tokenizer, head, meta={"command": "sft"})
    return str(path)


def check_train_inputs(cfg: ArborConfig) -> None:
    """What only ``arbor train`` needs of the config (the schema checks the rest)."""
    if cfg.train.init == "model" and not cfg.model.path and not cfg.resume:
        raise ConfigError("train.init=model needs config key 'model.path' (e.g. an SFT checkpoint directory)")
    key = "search.mcts.temperature" if cfg.search.kind == "mcts" else "search.temperature"
    if behaviour_temperature(cfg.search) <= 0:
        raise ConfigError(f"arbor train samples its behaviour policy: config key '{key}' must be > 0")


def resume_hint(run_dir: Path) -> str:
    """How to continue ``run_dir`` from its latest complete checkpoint (or say there is none)."""
    latest = latest_name(run_dir)
    if latest is None:
        return f"no checkpoint was written yet; {run_dir} holds the run's logs"
    return (
        f"resume from {run_dir / 'checkpoints' / latest} with: arbor train {run_dir / 'config.yaml'} resume={run_dir}"
    )


def run_train(cfg: ArborConfig) -> dict[str, Any]:
    """The body of ``arbor train``; see the module docstring."""
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    check_train_inputs(cfg)
    resume = check_resume(cfg)
    if cfg.model.path and not resume:
        check_weights(model_dir(cfg.model.path))  # a truncated weight file stops here, before Ray or a run dir
    # The policy's tokenizer: task.data.template=chat wraps the held-out prompts as the actors wrap theirs.
    tokenizer = build_tokenizer(
        cfg.model if not resume else dataclasses.replace(cfg.model, path=str(resume.checkpoint))
    )
    task = build_task(cfg.task, tokenizer)
    held_out = task.eval_problems()
    problems_to_skip(cfg, task)  # an sft.num_problems larger than the task stops here, before Ray starts
    demos = demonstration_samples(cfg.train.demonstrations, tokenizer, 0) if cfg.train.demonstrations else None
    runtime = make_runtime(cfg)  # may start Ray; the trainer's cleanup closes it, once
    try:
        if resume:
            run_dir = resume.run_dir
            (run_dir / f"config-resume-{int(time.time())}.yaml").write_text(to_yaml(cfg))
        else:
            run_dir = make_run_dir(cfg, "train")
        logger = RunLogger(run_dir, cfg, "train")
    except BaseException:
        runtime.close()
        raise
    trainer = Trainer(cfg, runtime, run_dir, logger, held_out, resume)
    try:
        console.print(
            f"[bold]arbor train[/] mode={cfg.train.mode} actors={cfg.resources.rollout_actors} "
            f"ranks={cfg.resources.learner_ranks} search={cfg.search.kind} run={run_dir}"
        )
        if resume:
            init_path = str(resume.checkpoint)
            console.print(f"resuming at step {trainer.step}, version {trainer.version} from {init_path}")
        else:
            init_path = warm_start(cfg, run_dir, logger, task, held_out)
            # the KL reference stays the init, also after a resume, from whatever directory it is started in
            trainer.state.reference_path = str(Path(init_path).resolve())
            trainer.state.init = str(cfg.train.init)
            with console.status("evaluating the init policy (greedy and with search)"):
                before, shown = evaluate_policy(cfg, init_path, held_out)
            trainer.state.before = before
            logger.log({f"eval_init/{k}": v for k, v in before.items()}, step=0)
            (run_dir / "eval_init.json").write_text(json.dumps(before | {"samples": shown}, indent=2))
        trainer.setup(init_path, demos)
        result = trainer.train()
    except RunFailed as exc:
        logger.close()
        raise RunFailed(f"{exc}.\n{resume_hint(run_dir)}") from None
    except BaseException:
        logger.close()
        raise
    finally:
        trainer.cleanup()  # the actors' CPUs go back before the final evaluation
    if result["interrupted"]:
        logger.close()
        raise Interrupted(
            f"interrupted at step {trainer.step}: checkpoint {result['checkpoint']} holds every step trained.\n"
            f"{resume_hint(run_dir)}"
        )
    try:
        before = trainer.state.before
        with console.status("evaluating the trained policy (greedy and with search)"):
            after, shown = evaluate_policy(cfg, result["checkpoint"], held_out)
        logger.log({f"eval_final/{k}": v for k, v in after.items()}, step=trainer.step)
        (run_dir / "eval_final.json").write_text(json.dumps(after | {"samples": shown}, indent=2))
        result |= {"before": before, "after": after, "init": trainer.state.init}
        # Capacity eviction only ever removes items already sampled, so stale eviction is the one way an
        # item can leave the buffer untrained.
        result["buffer_dropped"] = result["buffer"]["evicted_stale"]
        summary = {k: v for k, v in result.items() if isinstance(v, (int, float, str))}
        summary |= {f"init_{k}": v for k, v in (before or {}).items()}
        summary |= {f"trained_{k}": v for k, v in after.items()}
        logger.summary(summary)
        (run_dir / "result.json").write_text(json.dumps(result, indent=2, default=str))
    finally:
        logger.close()
    label = "SFT init" if trainer.state.init == "sft" else "init"
    console.print(train_table(f"{cfg.task.name}: held-out ({len(held_out)} problems)", before, after, result, label))
    console.print(f"checkpoint: {result['checkpoint']}\nrun directory: {run_dir}")
    result["run_dir"] = str(run_dir)
    return result
