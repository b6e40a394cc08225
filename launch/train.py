"""``arbor train``: the distributed actor-learner run on Ray.

Order of work (bad input stops before anything is written or any checkpoint touched):

1. Check the inputs: the resume directory and its latest checkpoint, the buffer snapshot (parsed in
   full), demonstrations; then start or join Ray and check that the cluster can hold the requested
   resources (GPUs, CPUs, custom node resources) and place them (one placement group).
2. Warm start (``train.init=sft``: SFT in this process) and the "before" evaluation: held-out greedy and
   MCTS with the value head.
3. Start the Coordinator (weights, stop flag, statistics), the ReplayBuffer actor, the learner group (W ranks
   in one torch.distributed group) and N RolloutActors, each in its placement-group bundle.
4. Train to the budget (``train.steps`` or ``train.max_wall_s``): async (actors free-run, the learner
   samples under the rate limiter) or sync (search a round, then train on it). Log, evaluate and
   checkpoint on schedule; a live console line shows step, version, buffer and accuracy.
5. Final checkpoint, stop the actors, the "after" evaluation and the before/after table.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import time
from collections import Counter
from pathlib import Path
from typing import Any

import torch

from arbor.actors.evaluate import evaluate
from arbor.actors.replay import ReplayBuffer
from arbor.actors.search import HFStepBackend, evaluation_scorers, run_searches
from arbor.actors.search.scaling import accuracy
from arbor.core.config import ArborConfig, ModelConfig, to_yaml
from arbor.core.errors import ConfigError, DataError
from arbor.core.model import (
    ValueHead,
    build_policy,
    build_tokenizer,
    hidden_size_of,
    save_checkpoint,
    value_head_for,
)
from arbor.core.runs import RunLogger, make_run_dir
from arbor.core.tasks import Problem, build_task
from arbor.core.tasks.split import problems_to_skip
from arbor.core.tree import SearchTree
from arbor.launch.report import console, progress_bar, render_tree, train_table

log = logging.getLogger(__name__)

LATEST = "latest"  # checkpoints/latest names the newest complete checkpoint directory
STATE_FILE = "train_state.json"
REPLAY_FILE = "replay.json"
ACTOR_ENV = {  # quiet, offline workers
    "TRANSFORMERS_VERBOSITY": "error",
    "HF_HUB_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "WANDB_SILENT": "true",
    "OMP_NUM_THREADS": "1",
    "PYTHONWARNINGS": "ignore",
}


# ---- inputs -----------------------------------------------------------------------------------


@dataclasses.dataclass
class ResumeState:
    run_dir: Path
    checkpoint: Path
    state: dict[str, Any]


def optimizer_layout(cfg: ArborConfig) -> dict[str, Any]:
    """The config keys the saved optimizer state depends on (it is per rank and laid out by the engine);
    a checkpoint records them and a resume must match them."""
    out: dict[str, Any] = {"resources.learner_ranks": cfg.resources.learner_ranks, "train.engine": cfg.train.engine}
    if cfg.train.engine == "deepspeed":  # the torch engine has no ZeRO stage
        out["train.zero_stage"] = cfg.train.zero_stage
    return out


def check_resume(cfg: ArborConfig) -> ResumeState | None:
    """The run to continue, with its newest complete checkpoint; ConfigError / DataError name what is wrong."""
    if not cfg.resume:
        return None
    run_dir = Path(cfg.resume)
    if not run_dir.is_dir():
        raise ConfigError(f"config key 'resume': run directory not found: {run_dir}")
    latest = run_dir / "checkpoints" / LATEST
    if not latest.is_file():
        raise ConfigError(f"config key 'resume': {run_dir} has no complete checkpoint ({latest} is missing)")
    ckpt = run_dir / "checkpoints" / latest.read_text().strip()
    state_file = ckpt / STATE_FILE
    try:
        state = json.loads(state_file.read_text())
        int(state["step"]), int(state["version"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DataError(f"{state_file}: cannot read the training state ({type(exc).__name__}: {exc})") from None
    for dotted, now in optimizer_layout(cfg).items():
        saved = state.get(dotted.split(".")[1], now)  # (checkpoints before these were recorded are not checked)
        if saved != now:
            raise ConfigError(
                f"config key '{dotted}' is {now}, but {ckpt} holds optimizer state saved with {saved};"
                f" resume with {dotted}={saved}"
            )
    ReplayBuffer.restore(ckpt / REPLAY_FILE)  # parse it all now: a corrupt snapshot stops before any work
    return ResumeState(run_dir, ckpt, state)


def load_demonstrations(path: str, tokenizer, version: int) -> list:
    """JSONL rows ``{"prompt": ..., "response": ...}`` as step samples (one per step, advantage +1 on each).

    A demonstration is a correct trace from outside the policy: its steps get value target 1 and a
    positive advantage; their behaviour log-probs are unknown and set to 0 (probability 1), so the
    decoupled-PPO weight pi_prox / pi_behav is at most 1 and never amplifies them.
    """
    from arbor.core.samples import StepSample
    from arbor.core.tasks.base import STEP_SEP

    out = []
    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"config key 'train.demonstrations': file not found: {file}")
    for lineno, line in enumerate(file.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            prompt, response = str(row["prompt"]), str(row["response"])
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise DataError(f"{file}:{lineno}: demonstration needs JSON with 'prompt' and 'response' ({exc})") from None
        state = list(tokenizer.encode(prompt, add_special_tokens=False))
        steps = [s + STEP_SEP for s in response.rstrip(STEP_SEP).split(STEP_SEP)]
        for i, step in enumerate(steps):
            ids = list(tokenizer.encode(step, add_special_tokens=False))
            last = i == len(steps) - 1
            if last:
                ids = ids[:-1] + [tokenizer.eos_token_id]  # a response ends at eos, as the policy's do
            out.append(
                StepSample(
                    state_tokens=list(state),
                    action_tokens=ids,
                    behaviour_logprobs=[0.0] * len(ids),
                    policy_version=version,
                    advantage=1.0,
                    value_target=1.0,
                    state_value=1.0,
                    reward=1.0 if last else 0.0,
                    terminal=last,
                    problem_uid=f"{file.name}:{lineno}",
                    meta={"source": str(file)},
                )
            )
            state += ids
    return out


# ---- Ray --------------------------------------------------------------------------------------


def start_ray(cfg: ArborConfig) -> bool:
    """Join the cluster at ``resources.address`` / $RAY_ADDRESS, or start one here; True if we started it."""
    import ray

    if ray.is_initialized():
        return False
    address = cfg.resources.address or os.environ.get("RAY_ADDRESS")
    if address:
        # No runtime_env here: inside `ray job submit` the job's own (working_dir, pip) must stay in force;
        # the workers' environment variables are set per actor and merge into it.
        ray.init(address=address, logging_level="WARNING")
        return True
    r = cfg.resources
    cpus_needed = r.rollout_actors * r.actor_cpus + r.learner_ranks * r.learner_cpus + r.buffer_cpus
    ray.init(
        num_cpus=max(os.cpu_count() or 1, math.ceil(cpus_needed)),  # logical CPUs: enough for the bundles
        include_dashboard=False,
        logging_level="WARNING",
    )
    return True


def bundles(cfg: ArborConfig) -> list[dict[str, float]]:
    """Placement-group bundles: one per rollout actor, one for the buffer (and coordinator), one per rank."""
    r = cfg.resources

    def bundle(cpus: float, gpus: float, extra: dict[str, float]) -> dict[str, float]:
        b = {"CPU": cpus} if cpus else {}
        if gpus:
            b["GPU"] = gpus
        return b | {k: float(v) for k, v in extra.items()}

    out = [bundle(r.actor_cpus, r.actor_gpus, r.actor_resources) for _ in range(r.rollout_actors)]
    out.append(bundle(r.buffer_cpus, 0, {}))
    out += [bundle(r.learner_cpus, r.learner_gpus, r.learner_resources) for _ in range(r.learner_ranks)]
    return out


def check_resources(cfg: ArborConfig) -> None:
    """ConfigError when the cluster cannot hold the request at all (e.g. more GPUs than exist)."""
    import ray

    have = ray.cluster_resources()
    need: Counter = Counter()
    for b in bundles(cfg):
        need.update(b)
    r = cfg.resources
    keys = {
        "GPU": f"resources.rollout_actors ({r.rollout_actors}) x resources.actor_gpus ({r.actor_gpus}) + "
        f"resources.learner_ranks ({r.learner_ranks}) x resources.learner_gpus ({r.learner_gpus})",
        "CPU": f"resources.rollout_actors x resources.actor_cpus + resources.learner_ranks x "
        f"resources.learner_cpus + resources.buffer_cpus ({r.buffer_cpus})",
    }
    for name, amount in need.items():
        if amount > have.get(name, 0.0) + 1e-9:
            source = keys.get(name, "resources.actor_resources / resources.learner_resources")
            raise ConfigError(
                f"the run asks for {amount:g} {name} ({source}) but the Ray cluster has {have.get(name, 0.0):g}"
            )


# ---- the run ----------------------------------------------------------------------------------


class Trainer:
    """Owns the actors and the loop; ``run`` returns the summary."""

    def __init__(self, cfg: ArborConfig, resume: ResumeState | None):
        self.cfg = cfg
        self.resume = resume
        self.step = int(resume.state["step"]) if resume else 0
        self.version = int(resume.state["version"]) if resume else 0
        self.lag_hist: Counter = Counter(
            {int(k): v for k, v in (resume.state.get("lag_histogram", {}) if resume else {}).items()}
        )
        self.samples_trained = int(resume.state.get("samples_trained", 0)) if resume else 0
        self.sync_seconds: list[float] = []
        self.last_eval: float | None = None
        self.next_snapshot_s = cfg.train.snapshot_every_s  # RL seconds at which the next snapshot is due
        self.snapshot_step = -1  # learner step of the latest snapshot
        self.evals: list[dict[str, Any]] = list(resume.state.get("evals", [])) if resume else []
        self.reference_path: str | None = resume.state.get("reference_path") if resume else None

    # actors ---------------------------------------------------------------------------------------

    def start_actors(self, init_path: str, run_dir: Path) -> None:
        import ray
        from ray.util.placement_group import placement_group
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        from arbor.actors.replay import RateLimiter, ReplayService
        from arbor.actors.rollout import RolloutWorker
        from arbor.core.channels import Coordinator
        from arbor.learner.rank import LearnerRank

        cfg, r, t = self.cfg, self.cfg.resources, self.cfg.train
        pg = placement_group(bundles(cfg), strategy=r.strategy, name=f"arbor-{run_dir.name}")
        ready, _ = ray.wait([pg.ready()], timeout=r.placement_timeout_s)
        if not ready:
            ray.util.remove_placement_group(pg)
            raise ConfigError(
                f"the Ray cluster could not place {len(bundles(cfg))} bundles with resources.strategy={r.strategy} "
                f"within resources.placement_timeout_s={r.placement_timeout_s:g} s (not enough nodes or resources)"
            )
        self.pg = pg

        def at(i: int) -> PlacementGroupSchedulingStrategy:
            return PlacementGroupSchedulingStrategy(placement_group=pg, placement_group_bundle_index=i)

        n = r.rollout_actors
        env = {"env_vars": dict(ACTOR_ENV)}  # merged into the job's runtime_env, which stays in force
        self.coordinator = ray.remote(Coordinator).options(num_cpus=0, scheduling_strategy=at(n)).remote()
        if self.resume:
            restore = str(self.resume.checkpoint / REPLAY_FILE)
            buffer_args: dict[str, Any] = {"restore_path": restore}
        else:
            # Sync mode trains on a whole round at once, so inserts must not wait on samples within a round.
            error_buffer = float(t.buffer_capacity) if t.mode == "sync" else t.error_buffer
            limiter = RateLimiter(t.min_size_to_sample, t.samples_per_insert, error_buffer)
            buffer_args = dict(
                capacity=t.buffer_capacity,
                sampler=t.sampler,
                max_policy_lag=t.max_policy_lag,
                rate_limiter=limiter,
                seed=t.seed,
            )
        self.buffer = (
            ray.remote(ReplayService)
            .options(num_cpus=r.buffer_cpus, scheduling_strategy=at(n), runtime_env=env)
            .remote(**buffer_args)
        )
        rank_cls = ray.remote(LearnerRank)
        self.ranks = [
            rank_cls.options(
                num_cpus=r.learner_cpus, num_gpus=r.learner_gpus, scheduling_strategy=at(n + 1 + i), runtime_env=env
            ).remote(cfg, i, r.learner_ranks, init_path, self.coordinator, self.reference_path)
            for i in range(r.learner_ranks)
        ]
        addr, port = ray.get(self.ranks[0].address.remote())
        ray.get([rk.setup.remote(addr, port, self.version) for rk in self.ranks])
        if self.resume:
            versions = ray.get([rk.load.remote(str(self.resume.checkpoint)) for rk in self.ranks])
            assert len(set(versions)) == 1 and versions[0] == self.version, versions
        ray.get(self.ranks[0].publish.remote())  # version `self.version`, before any actor searches
        actor_cls = ray.remote(RolloutWorker)
        # Constructor arguments held here for the whole run: Ray re-reads them when it restarts an actor.
        self.actor_args = [ray.put(cfg), ray.put(init_path)]
        self.actors = [
            actor_cls.options(
                num_cpus=r.actor_cpus,
                num_gpus=r.actor_gpus,
                max_restarts=r.max_actor_restarts,
                max_task_retries=-1 if r.max_actor_restarts else 0,
                scheduling_strategy=at(i),
                runtime_env=env,
                name=f"{run_dir.name}/rollout-{i}",
            ).remote(self.actor_args[0], i, n, self.actor_args[1], self.coordinator, self.buffer)
            for i in range(n)
        ]
        ray.get([a.ping.remote() for a in self.actors])
        self.placement = {
            "learner": [p["node_id"] for p in ray.get([rk.ping.remote() for rk in self.ranks])],
        }

    def stop_actors(self) -> None:
        import ray

        ray.get(self.coordinator.request_stop.remote())
        ray.get(self.buffer.close.remote())  # unblocks actors waiting to insert; their trees are not taken
        if getattr(self, "run_refs", None):
            ray.wait(self.run_refs, num_returns=len(self.run_refs), timeout=60)

    def shutdown(self) -> None:
        import ray

        try:  # let rank 0 release its weight server's pairs before the processes go
            ray.get([rk.close.remote() for rk in getattr(self, "ranks", [])], timeout=30)
        except Exception as exc:  # a rank that already died has nothing to release
            log.debug("closing learner ranks: %r", exc)
        for handle in getattr(self, "actors", []) + getattr(self, "ranks", []):
            ray.kill(handle)
        if getattr(self, "pg", None) is not None:
            ray.util.remove_placement_group(self.pg)

    # loop -----------------------------------------------------------------------------------------

    def learner_step(self, batch_ref, publish: bool | None = None) -> dict[str, Any] | None:
        import ray

        results = ray.get([rk.step.remote(batch_ref, publish) for rk in self.ranks])
        if results[0] is None:
            return None
        metrics = results[0]
        self.step += 1
        self.version = int(metrics.pop("version"))
        lags = metrics.pop("lags")
        self.lag_hist.update(lags)
        self.samples_trained += int(metrics.pop("batch"))
        if "sync/publish_seconds" in metrics:
            self.sync_seconds.append(metrics["sync/publish_seconds"])
        return metrics

    def checkpoint(self, run_dir: Path, t_rl: float) -> Path:
        """Model + value head (HF), optimizer/scheduler/RNG per rank, buffer + cursors, step and version."""
        import ray

        name = f"step-{self.step:06d}"
        path = run_dir / "checkpoints" / name
        if path.exists():  # already written at this step (e.g. a periodic one, or a resume with no budget left)
            return path
        meta = {"command": "train", "step": self.step, "version": self.version}
        ray.get([rk.save.remote(str(path), meta) for rk in self.ranks])
        snap = ray.get(self.buffer.snapshot.remote(str(path / REPLAY_FILE)))
        state = {
            "step": self.step,
            "version": self.version,
            "samples_trained": self.samples_trained,
            "lag_histogram": {str(k): v for k, v in sorted(self.lag_hist.items())},
            "rl_seconds": t_rl,
            "cursors": snap["cursors"],
            "reference_path": self.reference_path,
            "evals": self.evals,
        }
        state |= {dotted.split(".")[1]: value for dotted, value in optimizer_layout(self.cfg).items()}
        (path / STATE_FILE).write_text(json.dumps(state, indent=2))
        tmp = run_dir / "checkpoints" / f".{LATEST}.tmp"
        tmp.write_text(name)
        os.replace(tmp, run_dir / "checkpoints" / LATEST)  # only a complete checkpoint becomes "latest"
        return path

    def run(self, run_dir: Path, logger: RunLogger, held_out: list[Problem]) -> dict[str, Any]:
        import ray

        cfg, t = self.cfg, self.cfg.train
        eval_cfg = dataclasses.replace(cfg.eval, num_samples=0)
        start_step, start_samples = self.step, self.samples_trained
        t0 = time.time()
        prior_seconds = float(self.resume.state.get("rl_seconds", 0.0)) if self.resume else 0.0
        per_actor = max(1, math.ceil(t.sync_trees_per_round / len(self.actors)))
        if t.mode == "async":
            self.run_refs = [a.run.remote() for a in self.actors]
        last_log = time.time()

        def budget_left() -> bool:
            if self.step >= t.steps:
                return False
            return not (t.max_wall_s and time.time() - t0 + prior_seconds >= t.max_wall_s)

        with progress_bar() as bar:
            job = bar.add_task("train", total=t.steps, completed=self.step, info="")
            while budget_left():
                if t.mode == "sync":
                    ray.get([a.run.remote(max_trees=per_actor) for a in self.actors])
                    size = ray.get(self.buffer.stats.remote())["size"]
                    steps = min(size // t.batch_size, t.steps - self.step)
                    todo = []
                    for k in range(steps):
                        ref = self.buffer.sample.remote(t.batch_size, self.version, 5.0)
                        todo.append(self.learner_step(ref, publish=k == steps - 1))
                    produced = [m for m in todo if m is not None]
                else:
                    ref = self.buffer.sample.remote(t.batch_size, self.version, 1.0)
                    m = self.learner_step(ref)
                    produced = [m] if m is not None else []
                    if m is None:
                        self._check_actors()
                for m in produced:
                    self._after_step(m, bar, job, logger, run_dir, held_out, eval_cfg, time.time() - t0 + prior_seconds)
                if not produced and time.time() - last_log > 30:
                    console.print(f"waiting for samples (buffer {ray.get(self.buffer.stats.remote())['size']})")
                    last_log = time.time()
        rl_seconds = time.time() - t0
        self.stop_actors()
        if t.snapshot_every_s and self.snapshot_step != self.step:  # the end of the budget is a point too
            self.snapshot(run_dir, rl_seconds + prior_seconds)
        ckpt = self.checkpoint(run_dir, rl_seconds + prior_seconds)
        buffer_stats = ray.get(self.buffer.stats.remote())
        coord = ray.get(self.coordinator.snapshot.remote())
        steps_done = self.step - start_step
        return {
            "checkpoint": str(ckpt),
            "steps": self.step,
            "version": self.version,
            "rl_seconds": rl_seconds,
            "samples_trained": self.samples_trained,
            "samples_per_s": (self.samples_trained - start_samples) / max(rl_seconds, 1e-9),
            "steps_per_s": steps_done / max(rl_seconds, 1e-9),
            "max_trained_lag": max(self.lag_hist) if self.lag_hist else 0,
            "lag_histogram": {str(k): v for k, v in sorted(self.lag_hist.items())},
            "buffer": buffer_stats,
            "actors": coord["stats"],
            "events": coord["events"],
            "placement": self.placement | {"actors": [s.get("node_id") for s in coord["stats"].values()]},
            "sync_seconds_mean": sum(self.sync_seconds) / max(len(self.sync_seconds), 1),
        }

    def _check_actors(self) -> None:
        """Surface rollout actors that died for good (restarts exhausted); stop if none is left."""
        import ray

        if not getattr(self, "run_refs", None):
            return
        done, _ = ray.wait(self.run_refs, num_returns=len(self.run_refs), timeout=0)
        failed = []
        for ref in done:
            try:
                ray.get(ref)
            except Exception as exc:  # noqa: BLE001 - an actor's death arrives as any Ray error
                failed.append(str(exc).splitlines()[0])
        if failed and len(done) == len(self.run_refs):
            raise RuntimeError(f"every rollout actor has stopped; the first failure: {failed[0]}")

    def _after_step(self, m, bar, job, logger: RunLogger, run_dir: Path, held_out, eval_cfg, t_rl: float) -> None:
        import ray

        t = self.cfg.train
        step = self.step
        if t.eval_every and step % t.eval_every == 0:
            result = ray.get(self.ranks[0].with_policy.remote(greedy_eval, held_out, eval_cfg))
            self.last_eval = result["greedy_accuracy"]
            self.evals.append({"step": step, "rl_seconds": t_rl, "greedy_accuracy": self.last_eval})
            logger.log({"eval/greedy_accuracy": self.last_eval, "eval/rl_seconds": t_rl}, step=step)
        if step % t.log_every == 0 or step == t.steps:
            buf = ray.get(self.buffer.stats.remote())
            coord = ray.get(self.coordinator.snapshot.remote())
            row = dict(m) | {f"buffer/{k}": v for k, v in buf.items() if isinstance(v, (int, float))}
            row |= actor_metrics(coord["stats"], t_rl)
            row |= {
                "train/version": self.version,
                "train/samples_trained": self.samples_trained,
                "train/rl_seconds": t_rl,
            }
            row["policy_lag/max_trained"] = max(self.lag_hist) if self.lag_hist else 0
            logger.log(row, step=step)
            logger.log_histogram("policy_lag/histogram", self.lag_hist, step=step)
            acc = f" acc {self.last_eval:.1%}" if self.last_eval is not None else ""
            info = (
                f"v{self.version} buf {buf['size']} lag≤{row['policy_lag/max_trained']} "
                f"reward {row.get('actors/leaf_accuracy', 0.0):.2f}{acc}"
            )
            bar.update(job, completed=step, info=info)
            if not console.is_terminal and step % max(1, t.steps // 10) == 0:
                console.print(f"train step {step}/{t.steps} {info}")
        else:
            bar.update(job, completed=step)
        if t.tree_every and step % t.tree_every == 0:
            tree = ray.get(self.coordinator.latest_tree.remote())
            if tree is not None:
                text = render_tree(SearchTree.from_json(tree))
                out = run_dir / "trees" / f"step-{step:06d}.txt"
                out.parent.mkdir(exist_ok=True)
                out.write_text(text)
                logger.log_text("search/tree", text, step=step)
        if t.checkpoint_every and step % t.checkpoint_every == 0 and step < t.steps:
            self.checkpoint(run_dir, t_rl)
        if t.snapshot_every_s and t_rl >= self.next_snapshot_s:
            self.snapshot(run_dir, t_rl)

    def snapshot(self, run_dir: Path, t_rl: float) -> Path:
        """The current policy in HF format at ``snapshots/t-SECONDS`` (wall-time curves: bench/vs_trl.py)."""
        import ray

        path = run_dir / "snapshots" / f"t-{t_rl:08.1f}"
        ray.get(self.ranks[0].with_policy.remote(save_snapshot, str(path), {"step": self.step, "rl_seconds": t_rl}))
        every = self.cfg.train.snapshot_every_s
        self.next_snapshot_s = (math.floor(t_rl / every) + 1) * every
        self.snapshot_step = self.step
        return path


def save_snapshot(model, tokenizer, path: str, meta: dict[str, Any]) -> str:
    """Save the learner's current policy as an HF checkpoint (runs on learner rank 0)."""
    return str(save_checkpoint(Path(path), model, tokenizer, meta={"command": "train"} | meta))


def greedy_eval(model, tokenizer, problems: list[Problem], eval_cfg) -> dict[str, Any]:
    """Held-out evaluation of the learner's current policy (runs on learner rank 0)."""
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


# ---- evaluation before and after ---------------------------------------------------------------


def evaluate_policy(cfg: ArborConfig, path: str, held_out: list[Problem]) -> tuple[dict[str, float], list[dict]]:
    """Held-out greedy accuracy and MCTS-with-value-head accuracy of the checkpoint at ``path``, and a few
    greedy responses (prompt, response, verdict) to read."""
    model, tokenizer = build_policy(ModelConfig(path=path))
    head = value_head_for(model, path)
    greedy = evaluate(model, tokenizer, held_out, dataclasses.replace(cfg.eval, num_samples=0))
    out = {"greedy_accuracy": greedy.greedy_accuracy}
    sims = cfg.train.eval_search_simulations
    if sims:
        search = dataclasses.replace(
            cfg.search,
            kind="mcts",
            simulations=sims,
            dirichlet_eps=0.0,
            terminal_value="value_head",
            answer_by="value_vote",
            token_budget=0,
        )
        backend = HFStepBackend(model, tokenizer, head, seed=cfg.search.seed, max_batch_rows=cfg.search.max_batch_rows)
        trees = run_searches(backend, held_out, search, evaluation_scorers)
        out["search_accuracy"] = accuracy(trees, held_out)
        out["search_generated_tokens"] = sum(tr.tokens_generated for tr in trees) / len(trees)
    return out, greedy.samples


def warm_start(cfg: ArborConfig, run_dir: Path, logger: RunLogger, task, held_out) -> str:
    """The RL init: SFT here (``train.init=sft``) saved as ``checkpoints/init``, or ``model.path`` as is."""
    if cfg.train.init == "model":
        return str(cfg.model.path)
    from arbor.launch.report import advance
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
    head = ValueHead(hidden_size_of(model))
    path = save_checkpoint(run_dir / "checkpoints" / "init", model, tokenizer, head, meta={"command": "sft"})
    return str(path)


def run_train(cfg: ArborConfig) -> dict[str, Any]:
    """The body of ``arbor train``; see the module docstring."""
    import ray

    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    resume = check_resume(cfg)
    if cfg.train.init == "model" and not cfg.model.path and not resume:
        raise ConfigError("train.init=model needs config key 'model.path' (e.g. an SFT checkpoint directory)")
    if cfg.search.temperature <= 0:
        raise ConfigError("arbor train samples its behaviour policy: config key 'search.temperature' must be > 0")
    # The policy's tokenizer: task.data.template=chat wraps the held-out prompts as the actors wrap theirs.
    tokenizer = build_tokenizer(cfg.model if not resume else ModelConfig(path=str(resume.checkpoint)))
    task = build_task(cfg.task, tokenizer)
    held_out = task.eval_problems()
    problems_to_skip(cfg, task)  # an sft.num_problems larger than the task stops here, before Ray starts
    demos = None
    if cfg.train.demonstrations:
        demos = load_demonstrations(cfg.train.demonstrations, tokenizer, version=0)
    started = start_ray(cfg)
    trainer = Trainer(cfg, resume)
    try:
        check_resources(cfg)
        if resume:
            run_dir = resume.run_dir
            (run_dir / f"config-resume-{int(time.time())}.yaml").write_text(to_yaml(cfg))
        else:
            run_dir = make_run_dir(cfg, "train")
        logger = RunLogger(run_dir, cfg, "train")
        try:
            console.print(
                f"[bold]arbor train[/] mode={cfg.train.mode} actors={cfg.resources.rollout_actors} "
                f"ranks={cfg.resources.learner_ranks} search={cfg.search.kind} run={run_dir}"
            )
            if resume:
                init_path = str(resume.checkpoint)
                before = resume.state.get("before")
                console.print(f"resuming at step {trainer.step}, version {trainer.version} from {init_path}")
            else:
                init_path = warm_start(cfg, run_dir, logger, task, held_out)
                trainer.reference_path = init_path  # the KL reference stays the init, also after a resume
                with console.status("evaluating the init policy (greedy and with search)"):
                    before, shown = evaluate_policy(cfg, init_path, held_out)
                logger.log({f"eval_init/{k}": v for k, v in before.items()}, step=0)
                (run_dir / "eval_init.json").write_text(json.dumps(before | {"samples": shown}, indent=2))
            with console.status("starting the rollout actors, replay buffer and learner group"):
                trainer.start_actors(init_path, run_dir)
            if demos and not resume:  # a resumed buffer holds them already
                ray.get(trainer.buffer.insert.remote(demos, True))
                console.print(f"inserted {len(demos)} demonstration steps from {cfg.train.demonstrations}")
            result = trainer.run(run_dir, logger, held_out)
            state_file = Path(result["checkpoint"]) / STATE_FILE
            state = json.loads(state_file.read_text()) | {"before": before}
            state_file.write_text(json.dumps(state, indent=2))
            trainer.shutdown()
            with console.status("evaluating the trained policy (greedy and with search)"):
                after, shown = evaluate_policy(cfg, result["checkpoint"], held_out)
            logger.log({f"eval_final/{k}": v for k, v in after.items()}, step=trainer.step)
            (run_dir / "eval_final.json").write_text(json.dumps(after | {"samples": shown}, indent=2))
            result |= {"before": before, "after": after}
            summary = {k: v for k, v in result.items() if isinstance(v, (int, float, str))}
            summary |= {f"init_{k}": v for k, v in (before or {}).items()}
            summary |= {f"trained_{k}": v for k, v in after.items()}
            # Capacity eviction only ever removes items already sampled, so stale eviction is the one way
            # an item can leave the buffer untrained.
            summary["buffer_dropped"] = result["buffer"]["evicted_stale"]
            result["buffer_dropped"] = summary["buffer_dropped"]
            logger.summary(summary)
            (run_dir / "result.json").write_text(json.dumps(result, indent=2, default=str))
        finally:
            logger.close()
        console.print(train_table(f"{cfg.task.name}: held-out ({len(held_out)} problems)", before, after, result))
        console.print(f"checkpoint: {result['checkpoint']}\nrun directory: {run_dir}")
        result["run_dir"] = str(run_dir)
        return result
    finally:
        trainer.shutdown()
        if started:
            ray.shutdown()
