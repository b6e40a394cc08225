"""Shared fixtures: a tiny model config and a config with wandb disabled and runs under tmp_path."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from core.config import ArborConfig, load_config

os.environ.setdefault("WANDB_MODE", "disabled")
REPO = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = REPO / "configs" / "countdown_tiny.yaml"
SHARED_DATA = REPO.parent / "shared" / "data"

# A 2-layer, 64-wide model: real transformers code at a size that trains in seconds.
TINY = [
    "model.hidden_size=64",
    "model.num_layers=2",
    "model.num_heads=4",
    "model.intermediate_size=128",
    "wandb.mode=disabled",
]


@pytest.fixture
def tiny_cfg(tmp_path: Path) -> ArborConfig:
    """The default recipe shrunk to test size, writing runs under tmp_path."""
    return load_config(
        DEFAULT_CONFIG,
        TINY
        + [
            f"run.root={tmp_path / 'runs'}",
            "task.eval_size=8",
            "sft.steps=3",
            "sft.batch_size=8",
            "eval.batch_size=8",
            "eval.max_new_tokens=24",
            "eval.num_samples=2",
            "eval.ks=[1,2]",
        ],
    )
