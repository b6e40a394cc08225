"""bench/limits.py's measurement functions at tiny size: finite positive figures (no wall-clock asserts)."""

from __future__ import annotations

import math

import pytest
import torch

from arbor.core.config import load_config
from arbor.core.flops import matmul_peak
from arbor.core.samples import StepSample
from bench.limits import BENCH, copy_seconds, fill, main, replay_round
from tests.conftest import DEFAULT_CONFIG


def _trees(n: int = 4, size: int = 3) -> list[list[StepSample]]:
    return [
        [
            StepSample([1, 2, t], [3, i], [-0.5, -0.5], 0, 0.1, 1.0, 0.9, meta={"tree": t, "tree_size": size})
            for i in range(size)
        ]
        for t in range(n)
    ]


def test_matmul_peak_and_copy_are_positive_and_finite():
    assert 0 < matmul_peak(sizes=(32, 64), seconds=0.01) < math.inf
    assert 0 < copy_seconds(1 << 16, repeats=2) < math.inf


@pytest.mark.parametrize("sampler", ["fifo", "prioritized"])
def test_replay_round_against_deque_gives_positive_rates_and_ratios(sampler: str):
    cfg = load_config(DEFAULT_CONFIG, [*BENCH, f"buffer.sampler={sampler}"])
    trees = fill(_trees(), 20)
    assert sum(map(len, trees)) >= 20 and all(len(t) == 3 for t in trees)  # whole trees only
    rates = replay_round(trees, 4, cfg)
    assert len(rates) == 6 and all(0 < r < math.inf for r in rates)  # four rates, two ratios


@pytest.mark.skipif(torch.cuda.is_available(), reason="the no-GPU answer is only given without CUDA")
def test_cuda_figures_without_a_gpu_say_no_cuda():
    assert main(["--device", "cuda"])["cuda"] == "no cuda"
