"""SFT warm start: teach the policy the step format from exact-solver traces.

A ``corrupt_fraction`` of the traces carry one injected error and the difficulty mix is config, so the
warm-started policy is deliberately imperfect and leaves room for RL.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from arbor.core.batching import right_pad
from arbor.core.config import ArborConfig
from arbor.core.errors import DataError
from arbor.core.tasks import Problem, Task
from arbor.core.tasks.split import SFT_SEEDS, demonstration_pool, stretch_start
from arbor.learner.engine import OptimConfig, build_engine

IGNORE = -100  # label value the loss skips: prompt and padding positions
MAX_CONSECUTIVE_NONFINITE = 20  # non-finite losses in a row before SFT gives up
MAX_CONSECUTIVE_SKIPS = 100_000  # held-out or solution-less problems in a row before SFT says none is usable


@dataclass
class SFTBatch:
    input_ids: torch.Tensor  # [B, T] right-padded
    attention_mask: torch.Tensor  # [B, T]
    labels: torch.Tensor  # [B, T]; IGNORE on prompt and padding
    num_tokens: int  # real (unpadded) tokens in the batch
    num_corrupt: int  # traces in the batch with an injected error


def encode_example(
    tokenizer: PreTrainedTokenizerBase, prompt: str, response: str, max_len: int
) -> tuple[list[int], list[int]]:
    """Token ids of prompt + response + EOS, and labels that train on the response only."""
    p = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    r = tokenizer(response, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    ids = (p + r)[:max_len]
    labels = ([IGNORE] * len(p) + r)[:max_len]
    return ids, labels


def collate(examples: list[tuple[list[int], list[int]]], pad_id: int) -> tuple[torch.Tensor, ...]:
    """Right-pad a list of (ids, labels) into input_ids, attention_mask, labels tensors."""
    ids, mask = right_pad([x for x, _ in examples], pad_id)
    labels, _ = right_pad([y for _, y in examples], IGNORE)
    return ids, mask, labels


def _problem_stream(task: Task, cfg: ArborConfig) -> Iterator[Problem]:
    """Training problems in index order; different seeds read different stretches of the seed range."""
    index = stretch_start(SFT_SEEDS, cfg.sft.seed)
    while True:
        yield task.train_problem(index, cfg.sft.difficulty_mix)
        index += 1


def _pool_stream(task: Task, cfg: ArborConfig, rng: random.Random) -> Iterator[Problem]:
    """The ``sft.num_problems`` demonstration pool, reshuffled every pass."""
    pool = demonstration_pool(task, cfg.sft.num_problems, cfg.sft.difficulty_mix)
    while True:
        yield from rng.sample(pool, len(pool))


def sft_batches(
    task: Task,
    tokenizer: PreTrainedTokenizerBase,
    cfg: ArborConfig,
    exclude_keys: set[str],
    stream: Iterator[Problem] | None = None,
) -> Iterator[SFTBatch]:
    """An endless stream of training batches; problems whose content is held out are skipped. ``stream``
    replaces the config's problems (the pool, or the SFT stretch)."""
    rng = random.Random(cfg.sft.seed)
    if stream is None:
        stream = _pool_stream(task, cfg, rng) if cfg.sft.num_problems else _problem_stream(task, cfg)
    skipped = 0
    while True:
        examples, corrupt = [], 0
        while len(examples) < cfg.sft.batch_size:
            problem = next(stream)
            if problem.key in exclude_keys or problem.solution is None:
                skipped += 1
                if skipped >= MAX_CONSECUTIVE_SKIPS:
                    raise DataError(
                        f"SFT found no usable demonstration in {skipped} training problems in a row: each was "
                        "held out or had no worked solution (check the task's solution field and sft.num_problems)"
                    )
                continue
            skipped = 0
            trace = problem.solution
            if rng.random() < cfg.sft.corrupt_fraction:
                trace = task.corrupt(trace, rng)
                corrupt += 1
            examples.append(encode_example(tokenizer, problem.prompt, trace, cfg.model.max_seq_len))
        ids, mask, labels = collate(examples, tokenizer.pad_token_id)
        yield SFTBatch(ids, mask, labels, int(mask.sum()), corrupt)


def train_sft(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    task: Task,
    cfg: ArborConfig,
    exclude_keys: set[str],
    on_step: Callable[[int, dict[str, float]], bool | None] | None = None,
    stream: Iterator[Problem] | None = None,
) -> PreTrainedModel:
    """Run ``cfg.sft.steps`` updates on solver traces (of ``stream``'s problems, if given); returns the trained
    model (same object). ``on_step`` returning True stops early."""
    s = cfg.sft
    optim = OptimConfig(s.lr, s.weight_decay, s.grad_clip, s.warmup_steps, s.steps, s.min_lr_ratio)
    engine = build_engine(
        model, s.engine, optim, s.batch_size, zero_stage=s.zero_stage, compute_dtype=str(cfg.model.dtype)
    )
    engine.module.train()
    batches = sft_batches(task, tokenizer, cfg, exclude_keys, stream)
    skipped = consecutive = 0
    for step in range(1, s.steps + 1):
        t0 = time.perf_counter()
        batch = next(batches)
        out = engine(input_ids=batch.input_ids, attention_mask=batch.attention_mask, labels=batch.labels)
        loss = out.loss
        if not torch.isfinite(loss):
            # Skip the update rather than corrupt the weights; only a persistent blow-up stops the run.
            skipped, consecutive = skipped + 1, consecutive + 1
            if consecutive >= MAX_CONSECUTIVE_NONFINITE:
                raise FloatingPointError(f"SFT loss non-finite for {consecutive} steps up to step {step}; lower sft.lr")
            continue
        consecutive = 0
        grad_norm = engine.step(loss)
        dt = time.perf_counter() - t0
        metrics = {
            "sft/loss": float(loss.detach()),
            "sft/lr": engine.lr,
            "sft/grad_norm": grad_norm,
            "sft/tokens_per_s": batch.num_tokens / dt,
            "sft/corrupt_share": batch.num_corrupt / s.batch_size,
            "sft/skipped_nonfinite": skipped,
        }
        if on_step is not None and on_step(step, metrics):
            break
    engine.module.eval()
    return engine.module
