"""Arbor against TRL's GRPOTrainer: same SFT init, same task, same cores, same wall budget, one invocation.

    python bench/vs_trl.py [--sft DIR] [--budget-s 300] [--points 5] [key=value ...]

1. The SFT init: ``--sft DIR`` (an ``arbor sft`` checkpoint), else ``arbor sft`` on the config first.
2. TRL (``bench/trl_grpo.yaml`` holds its settings): ``GRPOTrainer`` on the config's training problems,
   rewarded by the same verifier (``reward.verify``), CPU, for ``--budget-s`` seconds of training.
3. Arbor: ``arbor train`` (``train.init=model`` from the same init, the config's recipe) for the same
   seconds of RL.

Both sides save their policy every ``budget / points`` seconds of training (the clock runs from the
first training step; setup is excluded on both sides). Afterwards every snapshot is scored with the same
greedy decoding on the same held-out problems, so the curves are comparable point for point. It writes
``curves.png`` and ``curves.md`` under ``runs/bench-vs-trl-*/`` and prints as its last line JSON with
``trl_final_accuracy``, ``arbor_final_accuracy`` and ``time_to_trl_final_accuracy_ratio``: the first
point at which Arbor reached TRL's final accuracy over the first point at which TRL did (null when Arbor
never did, or when TRL's final accuracy is at or below the init's, where the ratio says nothing).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import torch
from omegaconf import OmegaConf

from arbor.actors.evaluate import evaluate
from arbor.core.config import ModelConfig, load_config
from arbor.core.model import build_policy
from arbor.core.tasks import build_task
from arbor.core.tasks.split import TRL_SEEDS, problems_to_skip
from arbor.launch.commands import run_sft
from arbor.launch.train import run_train
from arbor.reward import verify

CONFIG = "configs/countdown_tiny.yaml"
TRL_CONFIG = str(Path(__file__).with_name("trl_grpo.yaml"))


class SnapshotClock:
    """Training seconds from ``start`` (time spent saving excluded); a model + tokenizer snapshot under
    ``folder/t-SECONDS`` every ``every_s`` and at the budget."""

    def __init__(self, budget_s: float, every_s: float, folder: Path):
        self.budget_s, self.every_s, self.folder = budget_s, every_s, folder
        self.t0: float | None = None
        self.paused = 0.0
        self.next = every_s

    def start(self) -> None:
        self.t0 = time.perf_counter()

    def tick(self, model, tokenizer, points: list[tuple[float, Path]]) -> bool:
        """After a training step: snapshot if one is due (appending (seconds, dir) to ``points``); True once
        the budget is spent."""
        elapsed = time.perf_counter() - self.t0 - self.paused
        if elapsed >= self.next or elapsed >= self.budget_s:
            t = time.perf_counter()
            path = self.folder / f"t-{elapsed:08.1f}"
            model.save_pretrained(path)
            tokenizer.save_pretrained(path)
            points.append((elapsed, path))
            self.next = (int(elapsed // self.every_s) + 1) * self.every_s
            self.paused += time.perf_counter() - t
        return elapsed >= self.budget_s


def trl_run(
    init: str, cfg, budget_s: float, every_s: float, out: Path, max_completion_length: int | None = None
) -> list[tuple[float, Path]]:
    """GRPO with TRL for ``budget_s`` seconds of training; returns (seconds, snapshot dir) points.
    ``max_completion_length`` replaces ``bench/trl_grpo.yaml``'s response cap (to match Arbor's)."""
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    settings = OmegaConf.to_container(OmegaConf.load(TRL_CONFIG), resolve=True)
    if max_completion_length is not None:
        settings["max_completion_length"] = max_completion_length
    task = build_task(cfg.task)
    skip = problems_to_skip(cfg, task)  # as Arbor's rollouts: held out, and the SFT demonstrations
    rows, i, wanted = [], TRL_SEEDS, int(settings.pop("problems"))
    while len(rows) < wanted:
        p = task.train_problem(i)
        i += 1
        if p.key not in skip:
            rows.append({"prompt": p.prompt, "reference": json.dumps(p.reference)})
    kind = cfg.task.name

    def correct(prompts, completions, reference, **_) -> list[float]:
        return [float(verify(kind, c, json.loads(r))) for c, r in zip(completions, reference)]

    model, tokenizer = build_policy(ModelConfig(path=init))
    points: list[tuple[float, Path]] = []

    clock = SnapshotClock(budget_s, every_s, out / "trl")

    class Clock(TrainerCallback):
        """Training seconds from the first step; snapshots every ``every_s``; stops at the budget."""

        def on_step_begin(self, args, state, control, **kw):
            if clock.t0 is None:
                clock.start()

        def on_step_end(self, args, state, control, model=None, **kw):
            if clock.tick(model, tokenizer, points):
                control.should_training_stop = True

    args = GRPOConfig(
        output_dir=str(out / "trl"),
        use_cpu=True,
        report_to=[],
        save_strategy="no",
        max_steps=10**6,
        disable_tqdm=True,
        seed=cfg.train.seed,
        **settings,
    )
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=correct,
        args=args,
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
        callbacks=[Clock()],
    )
    trainer.train()
    return points


def arbor_run(
    init: str, config: str, overrides: list[str], budget_s: float, every_s: float, stamp: str, name: str = ""
):
    """``arbor train`` from ``init`` for ``budget_s`` seconds of RL, snapshots every ``every_s``; returns
    (seconds, snapshot dir) points and the run's result."""
    cfg = load_config(
        config,
        [
            *overrides,
            "train.init=model",
            f"model.path={init}",
            "train.steps=1000000",
            f"train.max_wall_s={budget_s}",
            f"train.snapshot_every_s={every_s}",
            "train.eval_every=0",
            "train.checkpoint_every=0",
            "train.eval_search_simulations=0",
            f"run.name={name or f'bench-vs-trl-{stamp}-arbor'}",
        ],
    )
    result = run_train(cfg)
    snaps = sorted((Path(result["run_dir"]) / "snapshots").glob("t-*"))
    return [(float(p.name[2:]), p) for p in snaps], result


def score(points: list[tuple[float, Path]], init: str, held, eval_cfg) -> list[tuple[float, float]]:
    curve = []
    for seconds, path in [(0.0, Path(init)), *points]:
        model, tok = build_policy(ModelConfig(path=str(path)))
        curve.append((seconds, evaluate(model, tok, held, eval_cfg).greedy_accuracy))
    return curve


def first_reaching(curve: list[tuple[float, float]], level: float) -> float | None:
    return next((s for s, acc in curve if acc >= level), None)


def main(argv: list[str]) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sft", help="SFT checkpoint directory (default: run arbor sft first)")
    ap.add_argument("--budget-s", type=float, default=300.0, help="training seconds per side")
    ap.add_argument("--points", type=int, default=5, help="evaluation points per curve, the end included")
    ap.add_argument("--config", default=CONFIG)
    ap.add_argument("overrides", nargs="*", help="key=value overrides of the Arbor config")
    a = ap.parse_args(argv)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = Path("runs") / f"bench-vs-trl-{stamp}"
    out.mkdir(parents=True)
    cfg = load_config(a.config, a.overrides)
    torch.set_num_threads(cfg.threads or 2)
    init = a.sft or run_sft(load_config(a.config, [*a.overrides, f"run.name=bench-vs-trl-{stamp}-sft"]))["checkpoint"]
    every = a.budget_s / a.points
    held = build_task(cfg.task).eval_problems()
    eval_cfg = dataclasses.replace(cfg.eval, num_samples=0)

    t0 = time.time()
    trl_points = trl_run(init, cfg, a.budget_s, every, out)
    trl_wall = time.time() - t0
    torch.set_num_threads(cfg.threads or 2)  # TRL/accelerate may change it
    t0 = time.time()
    arbor_points, arbor_result = arbor_run(init, a.config, a.overrides, a.budget_s, every, stamp)
    arbor_wall = time.time() - t0

    trl_curve = score(trl_points, init, held, eval_cfg)
    arbor_curve = score(arbor_points, init, held, eval_cfg)
    trl_final, arbor_final = trl_curve[-1][1], arbor_curve[-1][1]
    init_acc = trl_curve[0][1]
    t_trl = first_reaching(trl_curve, trl_final)
    t_arbor = first_reaching(arbor_curve, trl_final)
    ratio = None
    if t_arbor is not None and t_trl:  # t_trl == 0: TRL ended where it started, nothing to race to
        ratio = t_arbor / t_trl

    lines = ["| side | seconds | greedy accuracy |", "|---|---|---|"]
    lines += [f"| TRL GRPO | {s:.0f} | {acc:.3f} |" for s, acc in trl_curve]
    lines += [f"| Arbor | {s:.0f} | {acc:.3f} |" for s, acc in arbor_curve]
    table = "\n".join(lines)
    (out / "curves.md").write_text(table + "\n")
    print(table)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for name, curve in (("TRL GRPOTrainer", trl_curve), ("Arbor (MCTS, async)", arbor_curve)):
        ax.plot([s for s, _ in curve], [acc for _, acc in curve], marker="o", label=name)
    ax.set_xlabel("training wall time (s)")
    ax.set_ylabel(f"held-out greedy accuracy ({len(held)} problems)")
    ax.set_title(f"{cfg.task.name}: same SFT init, same {cfg.threads or 2} cores")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "curves.png", dpi=120)
    result = {
        "init_accuracy": init_acc,
        "trl_final_accuracy": trl_final,
        "arbor_final_accuracy": arbor_final,
        "time_to_trl_final_accuracy_ratio": ratio,
        "trl_seconds_to_final": t_trl,
        "arbor_seconds_to_trl_final": t_arbor,
        "budget_s": a.budget_s,
        "trl_wall_s": trl_wall,
        "arbor_wall_s": arbor_wall,
        "arbor_steps": arbor_result["steps"],
        "arbor_samples_trained": arbor_result["samples_trained"],
        "init": init,
        "out": str(out),
    }
    (out / "result.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
