"""The optimisation engine behind every update: DeepSpeed (ZeRO stage from config) or plain PyTorch.

Both implement :class:`Engine` (forward through ``module``, ``step(loss)``, ``lr``, agreement across
ranks, and the optimizer and scheduler state a checkpoint keeps) so SFT, the benchmarks and the
actor-critic learner share one update path. On a machine without CUDA DeepSpeed runs on its CPU
accelerator over a gloo process group; a single process forms a group of one. This module is the
learner's one contact with DeepSpeed and torch.distributed.

Precision (``model.dtype``): an engine keeps float32 master weights and runs its forward passes under
autocast in the compute dtype (bfloat16 or float16 matrix products, float32 softmax and losses), so updates
smaller than a half-precision step are not rounded away. float32 runs without autocast.
"""

from __future__ import annotations

import contextlib
import math
import os
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import nn


@dataclass
class OptimConfig:
    lr: float  # peak learning rate
    weight_decay: float  # AdamW weight decay
    grad_clip: float  # max global gradient norm (0 disables)
    warmup_steps: int  # linear warm-up
    total_steps: int  # cosine decay horizon
    min_lr_ratio: float = 0.1  # final lr as a fraction of the peak


class Engine(Protocol):
    module: nn.Module

    def __call__(self, *args, **kwargs):
        """Forward through the wrapped module (through DeepSpeed's engine where it has one)."""
        ...

    def step(self, loss: torch.Tensor) -> float:
        """Backward, clip, optimizer step, schedule step; returns the pre-clip gradient norm."""
        ...

    @property
    def lr(self) -> float: ...

    def all_agree(self, flag: bool) -> bool:
        """True when ``flag`` holds on every rank (so all ranks take or skip a step together)."""
        ...

    def optimizer_state(self) -> dict[str, Any]:
        """This rank's optimizer and scheduler state: ``{"optimizer": ..., "scheduler": ...}``."""
        ...

    def load_optimizer_state(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`optimizer_state` returned (same ranks, same layout)."""
        ...


def lr_lambda(cfg: OptimConfig):
    """Linear warm-up then cosine decay to ``min_lr_ratio``, as a multiplier of the peak lr."""

    def fn(step: int) -> float:
        if step < cfg.warmup_steps:
            return (step + 1) / cfg.warmup_steps
        span = max(1, cfg.total_steps - cfg.warmup_steps)
        progress = min(1.0, (step - cfg.warmup_steps) / span)
        return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return fn


def _optimizer(module: nn.Module, cfg: OptimConfig) -> torch.optim.Optimizer:
    # No weight decay on norms and biases (1-d tensors), as is usual for transformers.
    decay = [p for p in module.parameters() if p.requires_grad and p.dim() >= 2]
    no_decay = [p for p in module.parameters() if p.requires_grad and p.dim() < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.95), foreach=True)


def compute_precision(module: nn.Module, compute_dtype: str) -> contextlib.AbstractContextManager:
    """Make ``module``'s weights float32 masters and return the context its forward passes run in: autocast
    in ``compute_dtype`` (bfloat16 | float16), or nothing for float32."""
    module.float()
    if compute_dtype == "float32":
        return contextlib.nullcontext()
    device = next(module.parameters()).device.type
    return torch.autocast(device, dtype=getattr(torch, str(compute_dtype)))


class TorchEngine:
    """A plain PyTorch loop: AdamW, global-norm clipping, LambdaLR."""

    def __init__(self, module: nn.Module, cfg: OptimConfig, compute_dtype: str = "float32"):
        self.precision = compute_precision(module, compute_dtype)
        self.module = module
        self.cfg = cfg
        self.optimizer = _optimizer(module, cfg)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lr_lambda(cfg))

    def __call__(self, *args, **kwargs):
        with self.precision:
            return self.module(*args, **kwargs)

    def step(self, loss: torch.Tensor) -> float:
        loss.backward()
        max_norm = self.cfg.grad_clip if self.cfg.grad_clip > 0 else float("inf")
        norm = torch.nn.utils.clip_grad_norm_(self.module.parameters(), max_norm)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return float(norm)

    @property
    def lr(self) -> float:
        return float(self.scheduler.get_last_lr()[0])

    def all_agree(self, flag: bool) -> bool:
        return flag  # one process: nothing to agree with

    def optimizer_state(self) -> dict[str, Any]:
        return {"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict()}

    def load_optimizer_state(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])


def init_process_group_if_needed(backend: str | None = None, store_file: str | None = None) -> None:
    """Join (or, alone, form) the torch.distributed group DeepSpeed expects.

    Alone, the group's store is in memory; with ``store_file`` (every rank on one machine) it is that file;
    otherwise it is the TCP rendezvous at MASTER_ADDR:MASTER_PORT. The first two open no network port
    (torch's TCPStore server listens on every interface)."""
    import deepspeed

    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return
    # A single process launched without a launcher is rank 0 of a world of one.
    os.environ.setdefault("RANK", "0")
    os.environ.setdefault("LOCAL_RANK", "0")
    os.environ.setdefault("WORLD_SIZE", "1")
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    if "MASTER_PORT" not in os.environ:
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            os.environ["MASTER_PORT"] = str(s.getsockname()[1])
    backend = backend or ("nccl" if torch.cuda.is_available() else "gloo")
    world, rank = int(os.environ["WORLD_SIZE"]), int(os.environ["RANK"])
    if world == 1 or store_file:
        dist = torch.distributed
        store = dist.HashStore() if world == 1 else dist.FileStore(store_file, world)
        dist.init_process_group(backend, store=store, rank=rank, world_size=world)
    deepspeed.init_distributed(dist_backend=backend, verbose=False)  # joins that group, or the TCP rendezvous


class DeepSpeedEngine:
    """A DeepSpeed engine over the module with a client AdamW (no compiled ops needed on CPU)."""

    def __init__(
        self, module: nn.Module, cfg: OptimConfig, batch_size: int, zero_stage: int = 0, compute_dtype: str = "float32"
    ):
        import deepspeed

        self.precision = compute_precision(module, compute_dtype)
        init_process_group_if_needed()
        self.cfg = cfg
        world = torch.distributed.get_world_size()
        ds_config = {
            "train_batch_size": batch_size * world,
            "train_micro_batch_size_per_gpu": batch_size,
            "gradient_accumulation_steps": 1,
            "gradient_clipping": cfg.grad_clip,
            "zero_optimization": {"stage": zero_stage},
            "bf16": {"enabled": False},
            "fp16": {"enabled": False},
            "steps_per_print": 1 << 30,  # Arbor logs its own metrics
            "wall_clock_breakdown": False,
        }
        optimizer = _optimizer(module, cfg)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(cfg))
        self.engine, self.optimizer, _, self.scheduler = deepspeed.initialize(
            model=module, optimizer=optimizer, lr_scheduler=scheduler, config=ds_config
        )
        self.module = self.engine.module

    def __call__(self, *args, **kwargs):
        with self.precision:
            return self.engine(*args, **kwargs)

    def step(self, loss: torch.Tensor) -> float:
        self.engine.backward(loss)
        # ZeRO 1-2 move gradients into partitioned buffers and report their norm; stage 0 leaves them on the params.
        own = None
        if self.engine.zero_optimization_stage() == 0:
            grads = [p.grad for p in self.module.parameters() if p.grad is not None]
            own = float(torch.nn.utils.get_total_norm(grads)) if grads else 0.0
        self.engine.step()
        norm = self.engine.get_global_grad_norm() if own is None else own
        return float(norm) if norm is not None else float("nan")

    @property
    def lr(self) -> float:
        return float(self.engine.get_lr()[0])

    def all_agree(self, flag: bool) -> bool:
        if torch.distributed.get_world_size() == 1:
            return flag
        vote = torch.tensor([1.0 if flag else 0.0], device=next(self.module.parameters()).device)
        torch.distributed.all_reduce(vote, op=torch.distributed.ReduceOp.MIN)
        return bool(vote.item() > 0)

    def optimizer_state(self) -> dict[str, Any]:
        return {"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict()}

    def load_optimizer_state(self, state: dict[str, Any]) -> None:
        if self.engine.zero_optimization_stage() > 0:
            # A ZeRO optimizer takes a list indexed by data-parallel rank and reads only its own entry (same
            # world size, non-elastic). Its fp32 master partition comes from the state, not rebuilt from the
            # (possibly bf16) weights.
            states = [None] * torch.distributed.get_world_size()
            states[torch.distributed.get_rank()] = state["optimizer"]
            self.optimizer.load_state_dict(states, load_from_fp32_weights=True)
        else:
            self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])


def deepspeed_checkpoint_globals() -> list[Any]:
    """The plain DeepSpeed types a ZeRO optimizer's state dict holds (its stage, loss scaler and parameter
    fragment addresses): allowed by name to ``torch.load(weights_only=True)``, nothing else is."""
    try:
        from deepspeed.runtime.fp16.loss_scaler import DynamicLossScaler, LossScaler
        from deepspeed.runtime.zero.config import ZeroStageEnum
        from deepspeed.utils.tensor_fragment import fragment_address
    except ImportError:  # the torch engine's checkpoints hold none of them
        return []
    return [DynamicLossScaler, LossScaler, ZeroStageEnum, fragment_address]


def build_engine(
    module: nn.Module, kind: str, cfg: OptimConfig, batch_size: int, zero_stage: int = 0, compute_dtype: str = "float32"
) -> TorchEngine | DeepSpeedEngine:
    """The engine named by ``kind`` (``deepspeed`` or ``torch``), computing in ``compute_dtype``."""
    if kind == "deepspeed":
        return DeepSpeedEngine(module, cfg, batch_size=batch_size, zero_stage=zero_stage, compute_dtype=compute_dtype)
    if kind == "torch":
        return TorchEngine(module, cfg, compute_dtype)
    raise ValueError(f"unknown engine '{kind}' (expected deepspeed or torch)")
