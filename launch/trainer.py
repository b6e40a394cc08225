"""The RL loop, written once: setup -> train -> checkpoint -> cleanup, over any :class:`Runtime`.

``train()`` repeats, until ``train.steps`` learner steps or ``train.max_wall_s`` seconds of RL:

1. generate: the rollout actors search and insert finished trees into the replay buffer (free-running in
   ``async`` mode, started once; one round of ``train.sync_trees_per_round`` trees in ``sync`` and ``local``);
2. sample: a batch of ``train.batch_size`` step samples from the buffer, under its rate limiter;
3. optimise: one learner step per batch on every rank; rank 0 publishes the new weights as a new version,
   which the actors pull before their next search round;
4. record: metrics, held-out evaluation, rendered trees, checkpoints and wall-time snapshots on schedule.

The runtime decides where the actors, buffer and learner live (Ray actors, or objects in this process);
nothing here knows which.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import shutil
import signal
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

from arbor.actors.evaluate import evaluate
from arbor.core.config import ArborConfig
from arbor.core.model import save_checkpoint
from arbor.core.runs import RunLogger
from arbor.core.samples import StepSample
from arbor.core.tasks import Problem
from arbor.core.tree import SearchTree
from arbor.launch.checkpoints import (
    STATE_FILE,
    ResumeState,
    TrainState,
    checkpoints_to_prune,
    is_complete,
    latest_name,
    mark_latest,
    optimizer_layout,
    partial_dir,
    step_dir,
    write_state,
)
from arbor.launch.report import console, progress_bar, render_tree
from arbor.launch.runtime import Runtime
from arbor.learner.rank import LearnerStep

log = logging.getLogger(__name__)


class Trainer:
    """One run's loop state over ``runtime``: steps, versions, counters, evaluations; ``train`` returns the summary."""

    def __init__(
        self,
        cfg: ArborConfig,
        runtime: Runtime,
        run_dir: Path,
        logger: RunLogger,
        held_out: list[Problem],
        resume: ResumeState | None = None,
    ):
        self.cfg, self.runtime, self.run_dir, self.logger, self.held_out = cfg, runtime, run_dir, logger, held_out
        self.resume = resume
        self.state = dataclasses.replace(resume.state) if resume else TrainState()
        self.lag_hist: Counter = Counter({int(k): v for k, v in self.state.lag_histogram.items()})
        self.sync_seconds: list[float] = []
        self.last_eval: float | None = None
        self.next_snapshot_s = cfg.train.snapshot_every_s  # RL seconds at which the next snapshot is due
        self.snapshot_step = -1  # learner step of the latest snapshot
        self.prior_seconds = self.state.rl_seconds  # RL seconds of the segments before this one (a resume)
        self.t0 = time.time()  # when this segment's RL began (reset by train)
        self.bar, self.job = None, None  # the live progress bar, while train runs
        self.closed = False
        self.interrupted = False  # a Ctrl-C ended the loop early

    @property
    def step(self) -> int:
        return self.state.step

    @property
    def version(self) -> int:
        return self.state.version

    # ---- setup --------------------------------------------------------------------------------

    def setup(self, init_path: str, demonstrations: list[StepSample] | None = None) -> None:
        """Start the runtime on ``init_path`` (a resume's checkpoint, or the run's init) at this version."""
        resume = self.resume.checkpoint if self.resume else None
        if resume is not None and latest_name(self.run_dir) != resume.name:
            # resumed from an earlier checkpoint (resume=RUN/checkpoints/step-N): the run's branch goes on from
            # there, so later checkpoints of the abandoned branch are rewritten, never reused as this one's
            mark_latest(self.run_dir, resume)
        with console.status("starting the rollout actors, replay buffer and learner group"):
            self.runtime.start(self.run_dir.name, init_path, resume, self.version, self.state.reference_path)
        if demonstrations and not self.resume:  # a resumed buffer holds them already
            self.runtime.insert_demonstrations(demonstrations)
            console.print(f"inserted {len(demonstrations)} demonstration steps from {self.cfg.train.demonstrations}")

    # ---- train --------------------------------------------------------------------------------

    def train(self) -> dict[str, Any]:
        """Train to the budget (or a Ctrl-C), write the final checkpoint and stop the actors; returns the
        run's figures. A first Ctrl-C lets the learner step in flight finish and ends the loop there, so the
        checkpoint holds every step trained; a second one stops at once."""
        previous = None
        if threading.current_thread() is threading.main_thread():
            previous = signal.signal(signal.SIGINT, self._on_sigint)
        try:
            return self._train()
        finally:
            if previous is not None:
                signal.signal(signal.SIGINT, previous)

    def _on_sigint(self, signum: int, frame: Any) -> None:
        if self.interrupted:
            raise KeyboardInterrupt
        self.interrupted = True
        console.print(
            "[bold]interrupted[/]: finishing the learner step in flight, then a checkpoint "
            "(Ctrl-C again stops at once and loses the steps since the last checkpoint)"
        )

    def _train(self) -> dict[str, Any]:
        t = self.cfg.train
        start_step, start_samples = self.step, self.state.samples_trained
        self.t0 = time.time()
        last_log = time.time()
        if t.mode == "async":
            self.runtime.stream()
        with progress_bar() as bar:
            self.bar, self.job = bar, bar.add_task("train", total=t.steps, completed=self.step, info="")
            while self._budget_left() and not self.interrupted:
                trained = self._async_step() if t.mode == "async" else self._round()
                if not trained and time.time() - last_log > 30:
                    console.print(f"waiting for samples (buffer {self.runtime.buffer_stats()['size']})")
                    last_log = time.time()
        rl_seconds = time.time() - self.t0
        self.runtime.stop_rollouts()
        if t.snapshot_every_s and self.snapshot_step != self.step:  # the end of the budget is a point too
            self.snapshot(rl_seconds + self.prior_seconds)
        ckpt = self.checkpoint(rl_seconds + self.prior_seconds)
        actors = self.runtime.actors()
        steps_done = self.step - start_step
        return {
            "interrupted": self.interrupted,
            "segment_samples": self.state.samples_trained - start_samples,
            "checkpoint": str(ckpt),
            "steps": self.step,
            "version": self.version,
            "rl_seconds": rl_seconds,  # this segment's (a resumed run's earlier segments: total_rl_seconds)
            "total_rl_seconds": rl_seconds + self.prior_seconds,
            "samples_trained": self.state.samples_trained,
            "samples_per_s": (self.state.samples_trained - start_samples) / max(rl_seconds, 1e-9),
            "steps_per_s": steps_done / max(rl_seconds, 1e-9),
            "max_trained_lag": max(self.lag_hist) if self.lag_hist else 0,
            "lag_histogram": {str(k): v for k, v in sorted(self.lag_hist.items())},
            "buffer": self.runtime.buffer_stats(),
            "actors": actors.stats,
            "events": actors.events,
            "placement": self.runtime.placement,
            "sync_seconds_mean": sum(self.sync_seconds) / max(len(self.sync_seconds), 1),
        }

    def rl_seconds(self) -> float:
        """Seconds of RL so far, over every segment of a resumed run."""
        return time.time() - self.t0 + self.prior_seconds

    def _budget_left(self) -> bool:
        t = self.cfg.train
        if self.step >= t.steps:
            return False
        return not (t.max_wall_s and self.rl_seconds() >= t.max_wall_s)

    def _async_step(self) -> bool:
        """Async mode: one learner step on a batch the free-running actors filled; False when none came."""
        if self._learn(self.runtime.sample(self.cfg.train.batch_size, self.version, 1.0)):
            return True
        self.runtime.check_rollouts()
        return False

    def _round(self) -> bool:
        """Round-based modes: search one round, then one learner step per whole batch it left in the buffer;
        weights are published once, after the round's last step. False when the round trained nothing."""
        t = self.cfg.train
        self.runtime.search_round(t.sync_trees_per_round)
        steps = min(self.runtime.buffer_stats()["size"] // t.batch_size, t.steps - self.step)
        trained = []
        for k in range(steps):
            last = k == steps - 1 or self.interrupted  # an interrupt publishes what the round trained so far
            trained.append(self._learn(self.runtime.sample(t.batch_size, self.version, 5.0), last))
            if self.interrupted:
                break
        return any(trained)

    def _learn(self, batch: Any, publish: bool | None = None) -> bool:
        """One learner step, recorded (metrics, evaluation, checkpoints) as it completes; False without a batch."""
        result = self.runtime.learn(batch, publish)
        if result is None:
            return False
        self.state.step += 1
        self.state.version = result.version
        self.lag_hist.update(result.lags)
        self.state.samples_trained += result.batch
        if "sync/publish_seconds" in result.metrics:
            self.sync_seconds.append(result.metrics["sync/publish_seconds"])
        self._record(result, self.rl_seconds())
        return True

    def _record(self, result: LearnerStep, t_rl: float) -> None:
        """Metrics, evaluation, trees, checkpoints and snapshots due at this step."""
        t, step = self.cfg.train, self.step
        if t.eval_every and step % t.eval_every == 0:
            self.evaluate(t_rl)
        if step % t.log_every == 0 or step == t.steps:
            self._log(result, t_rl)
        else:
            self.bar.update(self.job, completed=step)
        if t.tree_every and step % t.tree_every == 0:
            tree = self.runtime.latest_tree()
            if tree is not None:
                text = render_tree(SearchTree.from_json(tree))
                out = self.run_dir / "trees" / f"step-{step:06d}.txt"
                out.parent.mkdir(exist_ok=True)
                out.write_text(text)
                self.logger.log_text("search/tree", text, step=step)
        if t.checkpoint_every and step % t.checkpoint_every == 0 and step < t.steps:
            self.checkpoint(t_rl)
        if t.snapshot_every_s and t_rl >= self.next_snapshot_s:
            self.snapshot(t_rl)

    def evaluate(self, t_rl: float) -> None:
        """Held-out greedy accuracy of the learner's current policy, logged and kept in the state."""
        eval_cfg = dataclasses.replace(self.cfg.eval, num_samples=0)
        result = self.runtime.with_policy(greedy_eval, self.held_out, eval_cfg)
        self.last_eval = result["greedy_accuracy"]
        self.state.evals.append({"step": self.step, "rl_seconds": t_rl, "greedy_accuracy": self.last_eval})
        self.logger.log({"eval/greedy_accuracy": self.last_eval, "eval/rl_seconds": t_rl}, step=self.step)

    def _log(self, result: LearnerStep, t_rl: float) -> None:
        t, step = self.cfg.train, self.step
        buf = self.runtime.buffer_stats()
        row = dict(result.metrics) | {f"buffer/{k}": v for k, v in buf.items() if isinstance(v, (int, float))}
        row |= actor_metrics(self.runtime.actors().stats, t_rl)
        row |= {"train/version": self.version, "train/samples_trained": self.state.samples_trained}
        row |= {"train/rl_seconds": t_rl, "policy_lag/max_trained": max(self.lag_hist) if self.lag_hist else 0}
        self.logger.log(row, step=step)
        self.logger.log_histogram("policy_lag/histogram", self.lag_hist, step=step)
        acc = f" acc {self.last_eval:.1%}" if self.last_eval is not None else ""
        info = (
            f"v{self.version} buf {buf['size']} lag≤{row['policy_lag/max_trained']} "
            f"reward {row.get('actors/leaf_accuracy', 0.0):.2f}{acc}"
        )
        self.bar.update(self.job, completed=step, info=info)
        if not console.is_terminal and step % max(1, t.steps // 10) == 0:
            console.print(f"train step {step}/{t.steps} {info}")

    # ---- checkpoint ---------------------------------------------------------------------------

    def checkpoint(self, t_rl: float) -> Path:
        """Model + value head (HF), optimizer/scheduler/RNG per rank, buffer + cursors, step and version."""
        path = step_dir(self.run_dir, self.step)
        if latest_name(self.run_dir) == path.name and is_complete(path, self.step):
            return path  # written at this step already (a periodic one; a resume with no budget left)
        # Written aside and renamed into place: a kill mid-write leaves a .tmp-step-* directory (removed by
        # the next write or prune), never a step-* directory that looks finished. A step-* directory without
        # its state file (from a writer before this one), or one of a branch abandoned by resuming from an
        # earlier checkpoint, is not trusted either: it is replaced.
        tmp = partial_dir(self.run_dir, self.step)
        shutil.rmtree(tmp, ignore_errors=True)
        meta = {"command": "train", "step": self.step, "version": self.version}
        self.state.cursors = self.runtime.save(tmp, meta)
        self.state.lag_histogram = {str(k): v for k, v in sorted(self.lag_hist.items())}
        self.state.rl_seconds = t_rl
        self.state.layout = {dotted.split(".")[1]: value for dotted, value in optimizer_layout(self.cfg).items()}
        write_state(tmp / STATE_FILE, self.state)
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
        mark_latest(self.run_dir, path)  # only a complete checkpoint becomes "latest"
        for old in checkpoints_to_prune(self.run_dir, self.cfg.train.keep_checkpoints, self.state.evals):
            shutil.rmtree(old, ignore_errors=True)
        return path

    def snapshot(self, t_rl: float) -> Path:
        """The current policy in HF format at ``snapshots/t-SECONDS`` (wall-time curves: bench/vs_trl.py)."""
        path = self.run_dir / "snapshots" / f"t-{t_rl:010.3f}"  # ms: two fast steps never share a name
        self.runtime.with_policy(save_snapshot, str(path), {"step": self.step, "rl_seconds": t_rl})
        every = self.cfg.train.snapshot_every_s
        self.next_snapshot_s = (math.floor(t_rl / every) + 1) * every
        self.snapshot_step = self.step
        return path

    # ---- cleanup ------------------------------------------------------------------------------

    def cleanup(self) -> None:
        """Release the runtime's processes (once; later calls do nothing)."""
        if not self.closed:
            self.closed = True
            self.runtime.close()


def save_snapshot(model, tokenizer, path: str, meta: dict[str, Any]) -> str:
    """Save the learner's current policy as an HF checkpoint (runs next to the learner's weights)."""
    return str(save_checkpoint(Path(path), model, tokenizer, meta={"command": "train"} | meta))


def greedy_eval(model, tokenizer, problems: list[Problem], eval_cfg) -> dict[str, Any]:
    """Held-out evaluation of the learner's current policy (runs next to the learner's weights)."""
    return evaluate(model, tokenizer, problems, eval_cfg).to_json()


def actor_metrics(stats: dict[str, dict[str, Any]], seconds: float) -> dict[str, float]:
    """Rollout totals over all actors, as dashboard scalars."""
    if not stats:
        return {}
    total = Counter()
    for s in stats.values():
        total.update({k: v for k, v in s.items() if isinstance(v, (int, float)) and not isinstance(v, bool)})
    trees = max(total["trees"], 1)
    out = {
        "actors/trees": total["trees"],
        "actors/samples": total["samples"],
        "actors/leaf_accuracy": total["correct_leaves"] / max(total["leaves"], 1),
        "actors/tokens_generated_per_s": total["tokens_generated"] / max(seconds, 1e-9),
        "actors/weight_pulls": total["weight_pulls"],
        "actors/insert_wait_seconds": total["insert_seconds"],
        "actors/min_version": min(s.get("version", 0) for s in stats.values()),
        "actors/restarts": sum(bool(s.get("restarted")) for s in stats.values()),
    }
    for k, v in total.items():
        if k.startswith("search/") and k.endswith("_sum"):
            out[k[: -len("_sum")]] = v / trees
    out["search/forward_tokens_per_generated_token"] = total["tokens_forwarded"] / max(total["tokens_generated"], 1)
    return out
