"""The limits benchmark's GPU figures (``bench/limits.py --device cuda`` runs them): bf16 matmul peak, the
learner's MFU under bf16 autocast, HF-backend decode against the memory-bandwidth bound, and the NCCL
broadcast of the weights between two GPUs against a device copy."""

from __future__ import annotations

import itertools
import os
import statistics

import torch
from common import REPEATS, batches, copy_seconds, make_learner, policy, search, train_flops

from arbor.actors.search import HFStepBackend
from arbor.core.config import ArborConfig
from arbor.core.flops import matmul_peak, timed

CUDA_MATMUL_SIZES = (4096, 8192)


def _nccl_rank(rank: int, nbytes: int, port: int, repeats: int, result) -> None:
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.cuda.set_device(rank)
    dist.init_process_group("nccl", rank=rank, world_size=2)
    buf, dev = torch.empty(nbytes, dtype=torch.uint8, device="cuda"), torch.device("cuda", rank)
    times = []
    for _ in range(repeats + 1):
        dist.barrier()
        times.append(timed(lambda: dist.broadcast(buf, 0), dev))
    if rank == 0:
        result.put(statistics.median(times[1:]))
    dist.destroy_process_group()


def nccl_broadcast_seconds(nbytes: int, repeats: int = 9) -> float:
    """Median time to broadcast ``nbytes`` from GPU 0 to GPU 1 over NCCL (two spawned ranks)."""
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = mp.get_context("spawn").SimpleQueue()
    mp.spawn(_nccl_rank, args=(nbytes, port, repeats, result), nprocs=2)
    return result.get()


def gpu_figures(cfg: ArborConfig, dev: torch.device, sizes=CUDA_MATMUL_SIZES, bandwidth_bytes: int = 1 << 30) -> dict:
    """bf16 peak, learner MFU under bf16 autocast, search decode against the bandwidth bound, weight sync."""
    peak = matmul_peak(sizes, torch.bfloat16, dev)
    bandwidth = 2 * bandwidth_bytes / copy_seconds(bandwidth_bytes, dev)  # a copy reads and writes every byte
    model, tokenizer, head = policy(cfg, dev)
    backend = HFStepBackend.configured(model, tokenizer, head, cfg, seed=cfg.search.seed)
    n = cfg.search.trees_in_flight
    search(backend, cfg, 0, max(1, n // 4))
    calls = backend.model_calls
    trees, c = search(backend, cfg, n, n)
    weight_bytes = sum(p.numel() * p.element_size() for p in itertools.chain(model.parameters(), head.parameters()))
    at_bound = (backend.model_calls - calls) * weight_bytes / bandwidth  # seconds if every call only read weights
    learner, mfu = make_learner(cfg, "torch", dev), []
    for i, batch in enumerate(batches(trees, cfg.train.batch_size, REPEATS + 1)):
        # collate_steps builds its tensors with factory calls: the device context puts them on the GPU
        with torch.device(dev), torch.autocast(dev.type, dtype=torch.bfloat16):
            s = timed(lambda batch=batch: learner.update(batch, 0), dev)
        if i:
            mfu.append(train_flops(learner, batch)[0] / s / peak)
    state = learner.publish_state()
    nbytes = sum(t.numel() * t.element_size() for t in state.values())
    copy = copy_seconds(nbytes, dev)
    out = {
        "bf16_matmul_peak_tflops": peak / 1e12,
        "memory_bandwidth_gb_s": bandwidth / 1e9,
        "learner_mfu_bf16": statistics.median(mfu),
        "decode_tokens_per_s": c["generated"] / c["seconds"],
        "decode_vs_bandwidth_bound": at_bound / c["seconds"],
        "weight_bytes": nbytes,
        "device_copy_seconds": copy,
        "nccl_broadcast_seconds": "needs 2 GPUs",
    }
    if dev.type == "cuda" and torch.cuda.device_count() >= 2:
        nccl = nccl_broadcast_seconds(nbytes)
        out |= {"nccl_broadcast_seconds": nccl, "nccl_sync_vs_device_copy": copy / nccl}
    return out
