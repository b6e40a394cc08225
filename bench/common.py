"""What the limits benchmarks share: the machine's description, timing helpers, and the real search and learner
they measure (``bench/limits.py`` on the CPU, ``bench/limits_gpu.py`` on a GPU)."""

from __future__ import annotations

import dataclasses
import itertools
import os
import statistics
import time
from pathlib import Path

import torch

from arbor.actors.search import HFStepBackend, run_searches
from arbor.core.config import ArborConfig
from arbor.core.flops import matmul_params, timed
from arbor.core.model import build_policy, value_head_for
from arbor.core.samples import StepSample
from arbor.core.tasks import build_task
from arbor.learner.actor_critic import ActorCriticLearner, collate_steps
from arbor.learner.advantages import tree_to_samples
from arbor.learner.rank import build_learner

REPEATS = 5  # timed rounds per figure, after a warm-up; each ratio is the median over them
Trees = list[list[StepSample]]  # each finished tree's step samples
CPU = torch.device("cpu")


def option(argv: list[str], name: str, default: str | None = None) -> tuple[str | None, list[str]]:
    """The value of ``NAME VALUE`` in ``argv`` (``default`` without it), and ``argv`` without the pair."""
    if name not in argv:
        return default, argv
    i = argv.index(name)
    if i + 1 >= len(argv):
        raise SystemExit(f"{name} needs a value")
    return argv[i + 1], argv[:i] + argv[i + 2 :]


def machine() -> dict:
    """CPU model, cores, torch threads and version, date."""
    lines = Path("/proc/cpuinfo").read_text().splitlines()
    names = [ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("model name")]
    return {
        "cpu": names[0] if names else "unknown",
        "cores": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
    }


def copy_seconds(nbytes: int, device=CPU, repeats: int = 9) -> float:
    """Median time of ``dst.copy_(src)`` over ``nbytes`` bytes, after one warm-up copy."""
    src, dst = (torch.ones(nbytes, dtype=torch.uint8, device=device) for _ in range(2))
    return statistics.median([timed(lambda: dst.copy_(src), device) for _ in range(repeats + 1)][1:])


def medians(rows: list[tuple[float, ...]], names: tuple[str, ...]) -> dict[str, float]:
    """Each column of ``rows`` (one row a round) by its median, under its name."""
    return {name: statistics.median(r[i] for r in rows) for i, name in enumerate(names)}


def policy(cfg: ArborConfig, device=CPU):
    """(model, tokenizer, value head) as the config names them: the checkpoint's head, else a fresh one."""
    model, tokenizer = build_policy(cfg.model)
    head = value_head_for(model, cfg.model.path)
    return model.to(device), tokenizer, head.to(device)


def make_learner(cfg: ArborConfig, engine: str, device=CPU) -> ActorCriticLearner:
    """The real learner (policy + value head under ``engine``) at the config's batch size."""
    model, tokenizer, head = policy(cfg, device)
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, engine=engine))
    return build_learner(cfg, model, head, tokenizer.pad_token_id)


def train_flops(learner: ActorCriticLearner, samples: list[StepSample]) -> tuple[float, float, int]:
    """(6N x real tokens, that plus PaLM's 12·L·d·T attention term, real tokens) of one update on ``samples``."""
    lengths = collate_steps(samples, learner.pad_id, learner.max_len, 0).attention_mask.sum(1).double()
    cfg = learner.model.config
    dense = 6.0 * matmul_params(learner.model) * float(lengths.sum())
    attn = 12.0 * cfg.num_hidden_layers * cfg.hidden_size * float((lengths**2).sum())
    return dense, dense + attn, int(lengths.sum())


def batches(trees: Trees, size: int, n: int) -> list[list[StepSample]]:
    """``n`` learner batches of ``size`` samples, cycling through the trees' samples."""
    stream = itertools.cycle([s for t in trees for s in t])
    return [[next(stream) for _ in range(size)] for _ in range(n)]


def search(backend: HFStepBackend, cfg: ArborConfig, first: int, n: int) -> tuple[Trees, dict]:
    """Search training problems ``first .. first + n - 1``: each tree's samples (tagged as a rollout actor tags
    them) and the round's generated and forwarded tokens and seconds."""
    task = build_task(cfg.task)
    problems = [task.train_problem(i) for i in range(first, first + n)]
    t0 = time.perf_counter()
    found = run_searches(backend, problems, cfg.search)
    seconds = time.perf_counter() - t0
    trees = []
    for tree in found:
        samples = tree_to_samples(tree, cfg.train.value_head_weight, cfg.train.global_advantage)
        tag = {"tree": tree.problem_uid, "tree_size": len(samples)}
        trees.append([dataclasses.replace(s, meta={**s.meta, **tag}) for s in samples])
    generated, forwarded = sum(t.tokens_generated for t in found), sum(t.tokens_forwarded for t in found)
    return [t for t in trees if t], {"generated": generated, "forwarded": forwarded, "seconds": seconds}
