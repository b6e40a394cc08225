"""Model FLOPs and this machine's matrix-product peak: the two sides of every MFU figure Arbor reports."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import torch
from torch import nn
from transformers import PreTrainedModel

MATMUL_SIZES = (512, 1024, 2048)  # fp32 on CPU: all compute-bound; the best rate is the peak


def matmul_params(model: nn.Module) -> int:
    """Parameters that take part in matrix products (every nn.Linear, the LM head included)."""
    return sum(m.weight.numel() for m in model.modules() if isinstance(m, nn.Linear))


def train_flops_per_token(model: PreTrainedModel, seq_len: int) -> float:
    """Model FLOPs of one training token (forward + backward), PaLM appendix B: 6N + 12·L·d·T."""
    cfg = model.config
    return 6.0 * matmul_params(model) + 12.0 * cfg.num_hidden_layers * cfg.hidden_size * seq_len


def timed(fn: Callable[[], object], device: torch.device | str = "cpu") -> float:
    """Seconds ``fn`` takes, the device's queue drained before and after."""
    cuda = torch.device(device).type == "cuda"
    if cuda:
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    fn()
    if cuda:
        torch.cuda.synchronize(device)
    return time.perf_counter() - t0


def matmul_peak(
    sizes: Sequence[int] = MATMUL_SIZES,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
    seconds: float = 0.25,
) -> float:
    """Best FLOP/s of square ``torch.matmul`` over ``sizes``, each warmed up, then run for ~``seconds``."""
    best = 0.0
    for n in sizes:
        a, b, out = (torch.randn(n, n, device=device).to(dtype) for _ in range(3))
        timed(lambda a=a, b=b, out=out: torch.matmul(a, b, out=out), device)
        reps, spent = 0, 0.0
        while spent < seconds:
            spent += timed(lambda a=a, b=b, out=out: torch.matmul(a, b, out=out), device)
            reps += 1
        best = max(best, 2 * n**3 * reps / spent)
    return best
