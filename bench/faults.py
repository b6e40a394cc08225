"""The fault campaign: `arbor train` on the default tiny config, killed, interrupted, slowed and poisoned, and
what it lost (nothing, when it passes).

    python bench/faults.py                  # the whole campaign (about 15 minutes on 2 cores)
    python bench/faults.py --quick          # every phase, a few faults each (tests/ runs it without interrupts)
    python bench/faults.py --phases actors,driver [key=value ...]   # some phases; overrides for every run

Each phase runs the real command (``python -m arbor.launch.cli train``) as a user's shell would, in a
process group of its own, and kills real processes:

1. **actors**: two rollout actors, SIGKILLed at random moments (a random actor, 1-5 s after the previous one
   came back) until ``--actor-kills``; the run must finish by itself. The replay buffer's tree ledger
   (``arbor.actors.ledger``) then says what became of every tree: begun = inserted + discarded in flight, no
   tree inserted twice, no partial tree taken; each ``actor_restarted`` event carries the version the new
   process pulled before it searched and the newest published one.
2. **driver**: ``train.checkpoint_every=1``, the driver SIGKILLed ``--driver-kills`` times (at least 3, a
   third of them, while a checkpoint is being written: the moment ``.tmp-step-*`` appears), each followed by
   ``resume=``. After each kill ``checkpoints/latest`` must name a complete checkpoint; every resume must
   train; the steps of the run's lineage (each segment's steps up to where the next one resumed) must be
   1..N with none repeated or skipped, and samples_trained must be step x batch on every one of them.
3. **interrupts**: Ctrl-C (SIGINT to the group) must exit 130 with the resume command and a checkpoint
   holding every step trained; the resume is then run, its learner rank SIGKILLed: exit 1, the rank named,
   the resume command printed; and a last resume must finish. Nothing may be left running after any of it.
4. **backpressure**: ``debug.learner_slowdown=10`` with a capacity below the rate limiter's window: the
   actors block on inserts, the buffer never holds more than its capacity, nothing is dropped, and no
   sample is trained more than ``buffer.max_policy_lag`` versions old.
5. **poison**: ``debug.poison_problem_every`` (a malformed data row: its verifier crashes on every response,
   so its tree has no samples) and ``debug.nan_loss_every`` (a NaN loss): each counted and skipped, and the
   run finishes.

The last line printed is JSON with the campaign's counts.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil
from train_runs import CONFIG, Run, latest_is_complete, left_running, name_of, rows, step_of_latest, wait_until

from arbor.core.config import load_config
from arbor.core.model import ValueHead, build_policy, hidden_size_of, save_checkpoint

BATCH = 16
BASE = {  # the default config at a size where a step takes about a second (2 cores)
    "train.init": "model",  # a fresh policy (init_policy): the faults do not need one that solves anything
    "wandb.mode": "disabled",
    "task.eval_size": 8,
    "eval.batch_size": 8,
    "eval.max_new_tokens": 24,
    "train.batch_size": BATCH,
    "buffer.min_size_to_sample": BATCH,
    "buffer.error_buffer": 2 * BATCH,
    "buffer.max_policy_lag": 8,
    "train.eval_every": 0,
    "train.eval_search_simulations": 0,
    "train.log_every": 1,
    "train.tree_every": 0,
    "train.warmup_steps": 0,
    "search.mcts.simulations": 6,
    "search.trees_in_flight": 4,
    "search.max_step_tokens": 12,
    "search.max_response_tokens": 36,
    "resources.actor_cpus": 0.5,  # two actors and a learner rank on a 2-core machine
}


def start(root: Path, name: str, overrides: dict[str, Any], resume: bool = False) -> Run:
    """`arbor train` on the default config at the campaign's size (BASE), with ``overrides``."""
    return Run(root, name, {**BASE, **overrides}, resume)


def init_policy(root: Path, extra: dict[str, Any]) -> Path:
    """The config's model, freshly initialised, with a fresh value head: every run of the campaign starts here."""
    cfg = load_config(CONFIG, [f"{k}={v}" for k, v in {**BASE, **extra}.items()])
    model, tokenizer = build_policy(cfg.model)
    return save_checkpoint(root / "init", model, tokenizer, ValueHead(hidden_size_of(model)))


# ---- phases ------------------------------------------------------------------------------------------------


def actor_phase(root: Path, kills: int, rng: random.Random, extra: dict[str, Any]) -> dict[str, Any]:
    """SIGKILL rollout actors at random moments; the run must finish and account for every tree."""
    run = start(
        root,
        "actors",
        {
            **extra,
            "resources.rollout_actors": 2,
            "resources.max_actor_restarts": -1,
            "train.steps": 100_000,
            "train.max_wall_s": 30 + 8 * kills,  # room for the kills and the restarts they cost
            "train.checkpoint_every": 0,
        },
    )
    done = 0
    if run.wait_steps(1):
        while done < kills and run.alive():
            time.sleep(rng.uniform(1.0, 5.0))
            actors = run.named("RolloutActor")
            if not actors:
                continue
            try:
                rng.choice(actors).kill()
            except psutil.Error:
                continue
            done += 1
            deadline = time.time() + 90
            while run.alive() and time.time() < deadline and len(run.named("RolloutActor")) < 2:
                time.sleep(0.2)  # until Ray has restarted it
    code = run.wait()
    result = run.result()
    buf = result.get("buffer", {})
    restarts = [e for e in result.get("events", []) if e.get("kind") == "actor_restarted"]
    current = [e for e in restarts if e.get("version", -1) >= e.get("published_version", 0) - 1]
    return {
        "actor_kills": done,
        "actors_exit": code,
        "actor_restarts": len(restarts),
        "restarts_on_current_weights": len(current),
        "trees_generated": buf.get("trees_begun", 0),
        "trees_inserted": buf.get("trees_inserted", 0),
        "trees_discarded": buf.get("trees_discarded", 0),
        "duplicate_trees": buf.get("duplicate_trees", 0),
        "partial_trees": buf.get("partial_trees", 0),
        "unannounced_trees": buf.get("unannounced_trees", 0),
        "actors_steps": result.get("steps", 0),
    }


def driver_phase(root: Path, kills: int, rng: random.Random, extra: dict[str, Any]) -> dict[str, Any]:
    """SIGKILL the driver (some during a checkpoint write), resume each time; the lineage must be whole."""
    # the killed segments have steps to spare; the last resume gets a budget of 8 steps past its checkpoint
    steps = 8 if not kills else 100_000
    overrides = {**extra, "train.steps": steps, "train.checkpoint_every": 1, "train.keep_checkpoints": 2}
    during_write = max(3, kills // 3) if kills >= 3 else 1
    plan = ["checkpoint"] * during_write + ["training"] * (kills - during_write)
    rng.shuffle(plan)
    segments: list[Run] = []
    killed, in_write, latest_ok, resumes_ok = 0, 0, 0, 0
    orphans: list[str] = []
    run = start(root, "driver", overrides)
    for kind in plan:
        segments.append(run)
        if not (run.wait_steps(1) and wait_until(lambda d=run.dir: latest_is_complete(d), 120)):
            break  # it ended or failed before it trained: its resume did not succeed
        resumes_ok += len(segments) > 1  # a resume that trained
        wrote = False
        if kind == "checkpoint":  # the moment a checkpoint of this segment is being written
            deadline = time.time() + 120
            while run.alive() and time.time() < deadline and not wrote:
                wrote = run.writing_checkpoint()
                if not wrote:
                    time.sleep(0.002)
        else:
            time.sleep(rng.uniform(0.0, 4.0))
        if not run.alive():
            break
        procs = run.processes()
        os.kill(run.proc.pid, signal.SIGKILL)  # the driver alone, as the OOM killer or a lost shell would
        run.proc.wait()
        killed += 1
        in_write += wrote
        orphans += [name_of(p) for p in left_running(procs[1:], grace=10)]
        run.kill_group()  # whatever outlived it, before the resume
        latest_ok += latest_is_complete(run.dir)
        last = killed == len(plan)
        steps = step_of_latest(run.dir) + 8
        run = start(root, "driver", {**overrides, "train.steps": steps} if last else overrides, resume=True)
    if not segments or segments[-1] is not run:
        segments.append(run)
    if killed < len(plan):  # it ended before every kill was made: stop it, the count says so
        run.kill_group()
        steps = max(run.steps(), default=0)
    code = run.wait()
    if code == 0 and len(segments) > 1:
        resumes_ok += 1
    lineage, mismatched = [], 0
    for seg, nxt in zip(segments, [*segments[1:], None]):
        upto = nxt.resumed_from if nxt is not None else steps
        for row in rows(seg.dir)[seg.first_row : (nxt.first_row if nxt else None)]:
            if row["step"] <= upto:
                lineage.append(row["step"])
                mismatched += row.get("train/samples_trained") != row["step"] * BATCH
    return {
        "driver_kills": killed,
        "driver_kills_during_checkpoint": in_write,
        "latest_complete_after_kill": latest_ok,
        "resumes_ok": resumes_ok,
        "driver_exit": code,
        "steps_trained": len(set(lineage)),
        "steps_target": steps,
        "steps_repeated": len(lineage) - len(set(lineage)),
        "steps_skipped": len(set(range(1, steps + 1)) - set(lineage)),
        "steps_state_mismatch": mismatched,
        "processes_outliving_driver": len(orphans),  # 10 s after its SIGKILL (then killed with its group)
        "outliving_kinds": sorted(set(orphans)),
    }


def interrupt_phase(root: Path, extra: dict[str, Any]) -> dict[str, Any]:
    """Ctrl-C, then a learner rank's death on the resume, then a resume that finishes."""
    overrides = {**extra, "train.steps": 40, "train.checkpoint_every": 1000}
    run = start(root, "interrupts", overrides)
    sigint_ok = run.wait_steps(2)
    procs = run.processes()
    os.killpg(run.proc.pid, signal.SIGINT)
    code = run.wait(180)
    err = run.stderr()
    trained = max(run.steps(), default=0)
    sigint_ok = (
        sigint_ok
        and code == 130
        and f"resume={run.dir}" in err
        and "Traceback" not in err
        and latest_is_complete(run.dir)
        and step_of_latest(run.dir) == trained
        and not left_running(procs)
    )
    run = start(root, "interrupts", overrides, resume=True)
    learner_ok = run.wait_steps(2)
    procs = run.processes()
    ranks = run.named("LearnerActor")
    if learner_ok and ranks:
        ranks[0].kill()
    code = run.wait(180)
    err = run.stderr()
    learner_ok = (
        learner_ok
        and len(ranks) == 1
        and code == 1
        and "learner rank 0 died" in err
        and f"resume={run.dir}" in err
        and "Traceback" not in err
        and latest_is_complete(run.dir)
        and not left_running(procs)
    )
    final = start(root, "interrupts", {**overrides, "train.steps": step_of_latest(run.dir) + 2}, resume=True)
    finished = final.wait() == 0
    return {
        "sigint_ok": bool(sigint_ok),
        "learner_kill_ok": bool(learner_ok and finished),
    }


def backpressure_phase(root: Path, seconds: float, extra: dict[str, Any]) -> dict[str, Any]:
    """A learner ten times slower than it is: actors block, the buffer stays bounded, nothing dropped."""
    capacity = 40  # below the rate limiter's window (min_size 16 + error_buffer 32): capacity binds
    run = start(
        root,
        "backpressure",
        {
            **extra,
            "resources.rollout_actors": 2,
            "debug.learner_slowdown": 10,
            "buffer.capacity": capacity,
            "train.steps": 100_000,
            "train.max_wall_s": seconds,
            "train.checkpoint_every": 0,
        },
    )
    code = run.wait()
    result = run.result()
    buf = result.get("buffer", {})
    waits = buf.get("waits", {})
    return {
        "backpressure_exit": code,
        "max_buffer_items": buf.get("max_size", -1),
        "buffer_capacity": buf.get("capacity", capacity),
        "dropped": result.get("buffer_dropped", -1),  # items that left the buffer untrained (stale)
        "blocked_inserts": buf.get("blocked_inserts", 0),
        "actor_insert_wait_s": round(waits.get("insert_seconds", 0.0), 1),
        "max_trained_lag": result.get("max_trained_lag", -1),
        "max_policy_lag": BASE["buffer.max_policy_lag"],
        "backpressure_steps": result.get("steps", 0),
    }


def poison_phase(root: Path, seconds: float, extra: dict[str, Any]) -> dict[str, Any]:
    """Malformed rows (verifier crashes, empty trees) and NaN losses: counted, skipped, the run goes on."""
    run = start(
        root,
        "poison",
        {
            **extra,
            "debug.poison_problem_every": 4,
            "debug.nan_loss_every": 5,
            "train.steps": 100_000,
            "train.max_wall_s": seconds,
            "train.checkpoint_every": 0,
        },
    )
    code = run.wait()
    result = run.result()
    stats = list(result.get("actors", {}).values())
    crashed = sum(s.get("verifier_crashed", 0) for s in stats)
    empty = result.get("buffer", {}).get("empty_trees", 0)
    steps = rows(run.dir)
    nan = max((r.get("learner/skipped_nonfinite", 0) for r in steps), default=0)
    trained = sum(1 for r in steps if r.get("learner/step_skipped") == 0.0)
    return {
        "poison_exit": code,
        "verifier_crashes_skipped": int(crashed),
        "empty_trees_skipped": int(empty),
        "nan_steps_skipped": int(nan),
        "poison_skipped": int(crashed + empty + nan),
        "poison_steps_trained": trained,
    }


PHASES = ("actors", "driver", "interrupts", "backpressure", "poison")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a few faults per phase (the test's size)")
    parser.add_argument("--phases", default=",".join(PHASES), help=f"comma-separated, of {', '.join(PHASES)}")
    parser.add_argument("--actor-kills", type=int, default=None)
    parser.add_argument("--driver-kills", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--root", default=None, help="where the runs go (default: a temporary directory)")
    parser.add_argument("overrides", nargs="*", help="key=value for every run")
    args = parser.parse_args(argv)
    phases = [p for p in args.phases.split(",") if p]
    unknown = sorted(set(phases) - set(PHASES))
    if unknown:
        parser.error(f"unknown phase {unknown[0]!r}; expected some of {', '.join(PHASES)}")
    extra = dict(o.split("=", 1) for o in args.overrides)
    actor_kills = args.actor_kills if args.actor_kills is not None else (2 if args.quick else 20)
    driver_kills = args.driver_kills if args.driver_kills is not None else (2 if args.quick else 10)
    seconds = 15 if args.quick else 60  # the backpressure and poison phases' wall budget
    rng = random.Random(args.seed)
    root = Path(args.root) if args.root else Path(tempfile.mkdtemp(prefix="arbor-faults-"))
    root.mkdir(parents=True, exist_ok=True)
    out: dict[str, Any] = {}
    t0 = time.time()
    extra["model.path"] = str(init_policy(root, extra))
    for phase in phases:
        t = time.time()
        if phase == "actors":
            out |= actor_phase(root, actor_kills, rng, extra)
        elif phase == "driver":
            out |= driver_phase(root, driver_kills, rng, extra)
        elif phase == "interrupts":
            out |= interrupt_phase(root, extra)
        elif phase == "backpressure":
            out |= backpressure_phase(root, seconds, extra)
        else:
            out |= poison_phase(root, seconds, extra)
        out[f"{phase}_seconds"] = round(time.time() - t, 1)
        print(f"{phase}: {json.dumps({k: v for k, v in out.items()})}", file=sys.stderr, flush=True)
    out["seconds"] = round(time.time() - t0, 1)
    out["root"] = str(root)
    if not args.root:
        shutil.rmtree(root, ignore_errors=True)
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
