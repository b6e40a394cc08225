"""Shared fixtures: a tiny model config and a config with wandb disabled and runs under tmp_path."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from arbor.core.config import ArborConfig, ModelConfig, load_config
from arbor.core.model import ValueHead, build_policy, hidden_size_of, save_checkpoint

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


# Search limits small enough that a 2-layer model's trees stay a few steps deep and fast.
SMALL_SEARCH = ["search.max_step_tokens=12", "search.max_response_tokens=36", "search.max_depth=4"]


@pytest.fixture(scope="session")
def policy_checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """An SFT checkpoint of the tiny model (60 quick steps) and its OVM-fitted value checkpoint, via the CLI."""
    from arbor.launch.cli import main

    root = tmp_path_factory.mktemp("runs")
    common = [*TINY, *SMALL_SEARCH, f"run.root={root}", "threads=1", "task.eval_size=4"]
    sft = ["sft.steps=60", "sft.batch_size=32", "sft.engine=torch", "sft.lr=1e-2", "sft.warmup_steps=5"]
    assert main(["sft", str(DEFAULT_CONFIG), *common, *sft, "sft.eval_before_after=false"]) == 0
    (sft_ckpt,) = root.glob("sft-*/checkpoints/sft")
    value = ["value.problems=24", "value.samples_per_problem=4", "value.steps=50"]
    assert main(["value", str(DEFAULT_CONFIG), *common, *value, f"model.path={sft_ckpt}"]) == 0
    (value_run,) = root.glob("value-*")
    return {"root": root, "sft": sft_ckpt, "value_run": value_run, "value": value_run / "checkpoints" / "value"}


TINY_MODEL = ModelConfig(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64, max_seq_len=128)


def train_overrides(root: Path, init: Path, **extra: object) -> list[str]:
    base = {
        "train.init": "model",
        "model.path": str(init),
        "run.root": str(root),
        "wandb.mode": "disabled",
        "task.eval_size": 6,
        "eval.batch_size": 6,
        "eval.max_new_tokens": 24,
        "train.steps": 6,
        "train.batch_size": 16,
        "buffer.min_size_to_sample": 16,
        "buffer.error_buffer": 32,
        "buffer.max_policy_lag": 8,
        # the tests' buffer arithmetic (every inserted sample trained once, none dropped) is written at ratio 1;
        # the recipe's 0.25 lets the actor run ahead and drop step samples by design
        "buffer.samples_per_insert": 1.0,
        "train.eval_every": 3,
        "train.checkpoint_every": 3,
        "train.log_every": 1,
        "train.tree_every": 2,
        "train.eval_search_simulations": 2,
        "train.sync_trees_per_round": 4,
        "search.mcts.simulations": 4,
        "search.children": 2,
        "search.beam.width": 2,
        "search.trees_in_flight": 4,
        "train.sync_every": 1,  # a few steps' run still publishes after each (the recipe's 4 would publish once)
        "search.max_step_tokens": 12,
        "search.max_response_tokens": 36,
        "search.max_depth": 4,
    }
    base.update(extra)
    return [f"{k}={v}" for k, v in base.items()]


@pytest.fixture(scope="session")
def init_ckpt(tmp_path_factory) -> Path:
    """A random tiny policy with a fresh value head: the RL init of the training tests."""
    model, tokenizer = build_policy(TINY_MODEL)
    path = tmp_path_factory.mktemp("init") / "ckpt"
    save_checkpoint(path, model, tokenizer, ValueHead(hidden_size_of(model)))
    return path
