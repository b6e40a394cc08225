"""Limits: each of Arbor's hot paths against this machine's own ceiling, as a ratio, in one run.

    .venv/bin/python bench/limits.py [CONFIG] [key=value ...]       # configs/countdown_tiny.yaml; ~2 min on 2 cores
    .venv/bin/python bench/limits.py --device cuda [key=value ...]  # the GPU figures; says "no cuda" without one
    .venv/bin/python bench/limits.py --repeats 2 [key=value ...]    # fewer timed rounds (what tests/ runs)

Every ratio is Arbor over the limit (1 = at the limit), from two things timed back to back in this run,
``REPEATS`` times after a warm-up (the in-process replay ``REPLAY_ROUNDS`` times); the median is reported.
All on the config's model (random init unless ``model.path=DIR``) with ``threads`` torch threads for every
measurement, the peak included (default 1: what each rollout actor and learner rank runs with in
``arbor train``, resources.actor_threads / learner_threads).

1. ``matmul_peak_gflops``: best fp32 ``torch.matmul`` rate over the square ``MATMUL_SIZES`` (compute-bound).
2. ``learner_mfu_{torch,deepspeed}``: ``ActorCriticLearner.update`` on the step samples of a real search;
   FLOPs = 6 x matmul params (every nn.Linear, LM head included) x real tokens trained (padding not
   counted), over the peak. ``learner_mfu_attn_*`` adds PaLM's attention term, 12 x layers x width x row
   length per token.
3. ``rollout_flops_vs_peak``: the config's search (MCTS) through HFStepBackend; 2 x matmul params x tokens
   forwarded (``SearchTree.tokens_forwarded``) per second, over the peak.
4. ``weight_sync_vs_memcpy``: a torch ``copy_`` of as many bytes over the real path: ``publish_state`` ->
   ``WeightChannel.publish`` (ray.put) -> a RolloutActor's ``pull`` (ray.get, ``load_weights``);
   ``collective_weight_sync_vs_memcpy``: the same over ``train.weight_sync=collective`` (a gloo pair).
5. ``replay_{insert,sample}_vs_deque``: ReplayBuffer items/s over ``collections.deque`` doing the same
   appends and poplefts (FIFO; ``random.choices`` for a prioritized sampler) of the same StepSamples, one
   tree per insert and one learner batch per sample; ``service_*_vs_ray_deque``: the ReplayService actor
   over a deque behind a plain Ray actor, the same round trips.

``--device cuda``: bf16 matmul peak, the learner's MFU under bf16 autocast, HF-backend decode against the
memory-bandwidth bound (every model call reads every weight once), and the NCCL broadcast of the weights
between two GPUs (when there are two) against a device copy. The last line printed is JSON.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import random
import statistics
import sys
import tempfile
import time
from collections import deque
from typing import Any

import torch
from common import (
    REPEATS,
    Trees,
    batches,
    copy_seconds,
    machine,
    make_learner,
    medians,
    option,
    policy,
    search,
    train_flops,
)

from arbor.actors.replay import RateLimiter, ReplayBuffer
from arbor.actors.search import HFStepBackend
from arbor.core.config import ArborConfig, load_config
from arbor.core.flops import matmul_params, matmul_peak, timed
from arbor.core.model import build_policy
from arbor.core.samples import StepSample
from arbor.learner.actor_critic import ActorCriticLearner

BENCH = ["wandb.mode=disabled", "threads=1", "train.batch_size=128"]  # overridable like any key
REPLAY_ITEMS = 8192  # items per in-process replay round (the default buffer_capacity)
REPLAY_ROUNDS = 25  # a deque round takes about a millisecond: many rounds keep its median steady
SERVICE_ITEMS = 2048  # items per round through Ray


def rollout_rounds(cfg: ArborConfig, peaks: list[float]) -> tuple[Trees, dict]:
    """A warm-up search, then ``REPEATS`` rounds of (peak, a search of ``trees_in_flight`` new problems).
    Returns the trees' samples and the figures; appends the rounds' peaks to ``peaks``."""
    model, tokenizer, head = policy(cfg)
    backend = HFStepBackend.configured(model, tokenizer, head, cfg, seed=cfg.search.seed)
    n = cfg.search.trees_in_flight
    search(backend, cfg, 0, max(1, n // 4))
    trees, rows, flops = [], [], 2.0 * matmul_params(model)
    for r in range(REPEATS):
        peaks.append(peak := matmul_peak())
        got, c = search(backend, cfg, (r + 1) * n, n)
        trees += got
        generated, forwarded = c["generated"] / c["seconds"], c["forwarded"] / c["seconds"]
        rows.append((generated, forwarded, flops * forwarded / 1e9, flops * forwarded / peak))
    names = ("generated_tokens_per_s", "forwarded_tokens_per_s", "gflops", "flops_vs_peak")
    return trees, medians(rows, tuple(f"rollout_{n}" for n in names))


def learner_rounds(cfg: ArborConfig, trees: Trees, peaks: list[float]) -> tuple[dict, ActorCriticLearner]:
    """Each engine: a warm-up update, then ``REPEATS`` rounds of (peak, one update per engine, the order swapped
    every round). Returns the figures and the torch engine's learner (it publishes the weights later)."""
    learners, out = {}, {}
    for kind in ("torch", "deepspeed"):
        try:
            learners[kind] = make_learner(cfg, kind)
        except Exception as e:  # DeepSpeed may not run on every machine: report it, measure the rest
            out[f"learner_error_{kind}"] = f"{type(e).__name__}: {e}"
    first, *timed_batches = batches(trees, cfg.train.batch_size, REPEATS + 1)
    for learner in learners.values():
        learner.update(first, 0)
    rows: dict[str, list[tuple[float, ...]]] = {k: [] for k in learners}
    for r, batch in enumerate(timed_batches):
        peaks.append(peak := matmul_peak())
        dense, with_attn, tokens = train_flops(learners["torch"], batch)
        for kind in list(learners)[:: 1 if r % 2 == 0 else -1]:
            s = timed(lambda kind=kind, batch=batch: learners[kind].update(batch, 0))
            rows[kind].append((tokens / s, dense / s / 1e9, dense / s / peak, with_attn / s / peak, s))
    for kind, got in rows.items():
        names = ("tokens_per_s", "gflops", "mfu", "mfu_attn", "step_seconds")
        out |= medians(got, tuple(f"learner_{n}_{kind}" for n in names))
    return out | {"learner_batch_samples": cfg.train.batch_size}, learners["torch"]


def fill(trees: Trees, items: int) -> Trees:
    """Whole trees, cycled, until they hold at least ``items`` samples."""
    out: Trees = []
    for tree in itertools.cycle(trees):
        if sum(map(len, out)) >= items:
            return out
        out.append(tree)
    return out


def open_limiter(items: int) -> RateLimiter:
    # A window as wide as the round: this measures the buffer's own cost, never a wait.
    return RateLimiter(min_size_to_sample=1, samples_per_insert=1.0, error_buffer=float(items))


def replay_round(trees: Trees, batch: int, cfg: ArborConfig) -> tuple[float, ...]:
    """Buffer inserts/s, deque appends/s, buffer samples/s, deque samples/s (the same items and calls), and the
    two ratios."""
    total, b = sum(map(len, trees)), cfg.buffer
    draws = total // batch
    buffer = ReplayBuffer(2 * total, str(b.sampler), b.max_policy_lag, open_limiter(2 * total), cfg.train.seed)
    d: deque = deque()

    def pop(n: int) -> list[StepSample]:
        if b.sampler == "prioritized":
            return random.choices(d, k=n)
        return [d.popleft() if b.sampler == "fifo" else d.pop() for _ in range(n)]

    insert = timed(lambda: [buffer.try_insert(tree) for tree in trees])
    sample = timed(lambda: [buffer.try_sample(batch, 0) for _ in range(draws)])
    append = timed(lambda: [d.append(s) for tree in trees for s in tree])
    popped = timed(lambda: [pop(batch) for _ in range(draws)])
    stats = buffer.stats()
    assert (stats["inserted"], stats["sampled"]) == (total, draws * batch), "a refused call: the figures would lie"
    return (
        total / insert,
        total / append,
        draws * batch / sample,
        draws * batch / popped,
        append / insert,
        popped / sample,
    )


def replay_figures(trees: Trees, cfg: ArborConfig) -> dict:
    """The in-process buffer against a bare deque, ``REPLAY_ROUNDS`` rounds of ``REPLAY_ITEMS`` items."""
    rows = [replay_round(fill(trees, REPLAY_ITEMS), cfg.train.batch_size, cfg) for _ in range(REPLAY_ROUNDS)]
    names = ("replay_insert", "deque_append", "replay_sample", "deque_sample")
    ratios = ("replay_insert_vs_deque", "replay_sample_vs_deque")
    return medians(rows, (*(f"{n}_per_s" for n in names), *ratios)) | {"replay_sampler": cfg.buffer.sampler}


class DequeActor:
    """A bare deque behind a plain Ray actor: the ReplayService's baseline (the same round trips)."""

    def __init__(self):
        self.items: deque = deque()

    def insert(self, samples: list[StepSample]) -> bool:
        self.items.extend(samples)
        return True

    def sample(self, n: int, current_version: int, timeout_s: float = 1.0) -> list[StepSample]:
        return [self.items.popleft() for _ in range(n)]


def service_round(actors: tuple, trees: Trees, batch: int) -> tuple[float, ...]:
    """Per actor (ReplayService, DequeActor): items/s in, items/s out, round trips/s; then the three ratios.
    The two actors take turns call by call, so a stall of the shared machine hits both alike."""
    import ray

    total = sum(map(len, trees))
    draws = total // batch
    seconds = [[0.0, 0.0] for _ in actors]  # per actor: inserting, sampling
    calls = [(0, lambda a, tree=tree: a.insert.remote(tree)) for tree in trees]
    calls += [(1, lambda a: a.sample.remote(batch, 0, 1.0))] * draws
    for kind, call in calls:
        for i, actor in enumerate(actors):
            t0 = time.perf_counter()
            reply = ray.get(call(actor))
            seconds[i][kind] += time.perf_counter() - t0
            assert reply is not None and reply is not False, "a refused call: the figures would lie"
    out = tuple(x for ins, smp in seconds for x in (total / ins, draws * batch / smp, len(calls) / (ins + smp)))
    return (*out, *(out[i] / out[i + 3] for i in range(3)))


SYNC_PARTS = ("weight_sync", "publish_state", "channel_publish", "actor_pull_load", "memcpy")


def sync_rounds(channel: Any, worker: Any, learner: ActorCriticLearner) -> list[tuple[float, ...]]:
    """``REPEATS + 1`` publications (the first a warm-up) through ``channel``, each pulled by ``worker``:
    rows of SYNC_PARTS' seconds (total, publish_state, channel publish, the actor's pull and load, a copy_ of
    as many bytes) and the copy over the total."""
    import ray

    from arbor.core.channels import state_bytes

    rows = []
    for version in range(1, REPEATS + 2):
        pulled = ray.get(worker.report.remote())["pull_seconds"]
        t0 = time.perf_counter()
        state = learner.publish_state()
        t1 = time.perf_counter()
        channel.publish(version, state)
        t2 = time.perf_counter()
        ray.get(worker.pull.remote())
        total = time.perf_counter() - t0
        load = ray.get(worker.report.remote())["pull_seconds"] - pulled
        copy = copy_seconds(state_bytes(state))
        rows.append((total, t1 - t0, t2 - t1, load, copy, copy / total))
    assert ray.get(worker.report.remote())["version"] == REPEATS + 1, "the actor missed a version"
    return rows


def ray_rounds(cfg: ArborConfig, learner: ActorCriticLearner, trees: Trees) -> dict:
    """Weight sync through the real channel into a real RolloutWorker, and the ReplayService round trips."""
    import ray

    from arbor.core.channels import state_bytes
    from arbor.core.model import save_checkpoint
    from arbor.launch.distributed.actors import ACTOR_ENV, RolloutActor
    from arbor.launch.distributed.channels import weight_channel
    from arbor.launch.distributed.coordinator import Coordinator
    from arbor.launch.distributed.replay_service import ReplayService

    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR")
    try:
        with tempfile.TemporaryDirectory() as tmp:
            tokenizer = build_policy(cfg.model)[1]
            init = cfg.model.path or str(save_checkpoint(tmp, learner.model, tokenizer, learner.value_head))
            env = {"env_vars": dict(ACTOR_ENV)}
            cap = 4 * SERVICE_ITEMS
            service = ray.remote(ReplayService).options(num_cpus=0, runtime_env=env)
            service = service.remote(capacity=cap, sampler=str(cfg.buffer.sampler), rate_limiter=open_limiter(cap))
            sync = {}
            for mode in ("object_store", "collective"):  # the same rounds over each weight channel
                coordinator = ray.remote(Coordinator).options(num_cpus=0).remote()
                channel = weight_channel(mode, coordinator, learner_on_gpu=False, actors_on_gpu=False)
                channel.publish(0, learner.publish_state())
                run_cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, weight_sync=mode))
                worker = ray.remote(RolloutActor).options(num_cpus=1, runtime_env=env)
                worker = worker.remote(run_cfg, 0, 1, init, coordinator, service)
                sync[mode] = sync_rounds(channel, worker, learner)
                ray.kill(worker)
                channel.close()
            actors = (service, ray.remote(DequeActor).options(num_cpus=0).remote())
            calls = fill(trees, SERVICE_ITEMS)
            # the first round is a warm-up: it starts the deque actor
            svc = [service_round(actors, calls, cfg.train.batch_size) for _ in range(REPEATS + 1)][1:]
    finally:
        ray.shutdown()
    names = (*(f"{n}_seconds" for n in SYNC_PARTS), "weight_sync_vs_memcpy")
    figures = medians(sync["object_store"][1:], names)
    figures |= medians(sync["collective"][1:], tuple(f"collective_{n}" for n in names))
    nbytes = state_bytes(learner.publish_state())
    names = ("insert_per_s", "sample_per_s", "round_trips_per_s")
    svc_names = (*(f"service_{n}" for n in names), *(f"ray_deque_{n}" for n in names))
    svc_names += tuple(f"service_{n.replace('_per_s', '')}_vs_ray_deque" for n in names)
    return figures | medians(svc, svc_names) | {"weight_bytes": nbytes}


def table(r: dict) -> str:
    """The CPU figures as rows of (figure, Arbor, limit, ratio); the GPU figures as key: value lines."""
    if r["device"] != "cpu":
        return "\n".join(f"{k:>26}: {v:.4g}" if isinstance(v, float) else f"{k:>26}: {v}" for k, v in r.items())
    peak = f"{r['matmul_peak_gflops']:.1f} GFLOP/s fp32 matmul"
    rows = [("figure", "Arbor", "limit", "ratio")]
    for kind in ("torch", "deepspeed"):
        if f"learner_mfu_{kind}" not in r:
            rows.append((f"learner MFU ({kind})", r[f"learner_error_{kind}"][:60], peak, "-"))
            continue
        arbor = f"{r[f'learner_tokens_per_s_{kind}']:.0f} tok/s, {r[f'learner_gflops_{kind}']:.2f} GFLOP/s"
        ratio = f"{r[f'learner_mfu_{kind}']:.3f} ({r[f'learner_mfu_attn_{kind}']:.3f} with attention)"
        rows.append((f"learner MFU ({kind})", arbor, peak, ratio))
    gen, fwd, gf = r["rollout_generated_tokens_per_s"], r["rollout_forwarded_tokens_per_s"], r["rollout_gflops"]
    rollout = f"{gen:.0f} gen tok/s ({fwd:.0f} fwd, {gf:.2f} GFLOP/s)"
    rows.append(("rollout FLOP/s", rollout, peak, f"{r['rollout_flops_vs_peak']:.4f}"))
    for name, pre in (("weight sync (ray.put)", ""), ("weight sync (gloo pair)", "collective_")):
        sync = f"{r[pre + 'weight_sync_seconds'] * 1e3:.1f} ms for {r['weight_bytes'] / 1e6:.1f} MB"
        copy = f"{r[pre + 'memcpy_seconds'] * 1e3:.2f} ms copy_"
        rows.append((name, sync, copy, f"{r[pre + 'weight_sync_vs_memcpy']:.4f}"))
    for name, arbor, limit, against, ratio in (
        ("ReplayBuffer insert items/s", "replay_insert", "deque_append", "deque", "replay_insert_vs_deque"),
        ("ReplayBuffer sample items/s", "replay_sample", "deque_sample", "deque", "replay_sample_vs_deque"),
        ("ReplayService insert items/s", "service_insert", "ray_deque_insert", "deque actor", ""),
        ("ReplayService sample items/s", "service_sample", "ray_deque_sample", "deque actor", ""),
        ("ReplayService round trips/s", "service_round_trips", "ray_deque_round_trips", "deque actor", ""),
    ):
        ratio = ratio or f"{arbor}_vs_ray_deque"
        rows.append((name, f"{r[arbor + '_per_s']:.0f}", f"{r[limit + '_per_s']:.0f} {against}", f"{r[ratio]:.4f}"))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows]
    head = f"{r['cpu']}, {r['cores']} cores, {r['threads']} torch thread(s), {r['date']}, {r['seconds']:.0f} s"
    return "\n".join([head, *lines])


def main(argv: list[str]) -> dict:
    global REPEATS, REPLAY_ROUNDS
    command = " ".join([".venv/bin/python bench/limits.py", *argv])
    device, argv = option(argv, "--device", "cpu")
    if device not in ("cpu", "cuda"):
        raise SystemExit(f"--device must be cpu or cuda, got {device!r}")
    repeats, argv = option(argv, "--repeats", str(REPEATS))
    if not repeats.isdigit() or int(repeats) < 1:
        raise SystemExit(f"--repeats must be a whole number of at least 1, got {repeats!r}")
    if int(repeats) != REPEATS:  # the replay's rounds shrink alike: each is about a millisecond of deque work
        REPLAY_ROUNDS = max(1, REPLAY_ROUNDS * int(repeats) // REPEATS)
        REPEATS = int(repeats)
    config = argv[0] if argv and "=" not in argv[0] else "configs/countdown_tiny.yaml"
    cfg = load_config(config, [*BENCH, *[a for a in argv if "=" in a]])
    t0 = time.time()
    if device == "cuda" and not torch.cuda.is_available():
        result = machine() | {"device": device, "command": command, "cuda": "no cuda"}
    else:
        if cfg.threads > 0:
            torch.set_num_threads(cfg.threads)
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # save_checkpoint's bar would break up the table
        result = machine() | {"device": device, "command": command}
    if device == "cuda" and "cuda" not in result:
        result |= {"gpu": torch.cuda.get_device_name(0), "gpus": torch.cuda.device_count()}
        from limits_gpu import gpu_figures  # bench/ is on sys.path when this script runs

        result |= gpu_figures(cfg, torch.device("cuda"))
    elif device == "cpu":
        peaks: list[float] = []
        trees, rollout = rollout_rounds(cfg, peaks)
        learned, learner = learner_rounds(cfg, trees, peaks)
        result |= rollout | learned | replay_figures(trees, cfg) | ray_rounds(cfg, learner, trees)
        result["matmul_peak_gflops"] = statistics.median(peaks) / 1e9
    result["seconds"], result["repeats"] = time.time() - t0, REPEATS
    print(table(result))
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
