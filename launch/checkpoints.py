"""``arbor train``'s checkpoints: what one holds, how a resume finds and checks the newest complete one.

A checkpoint is a directory ``checkpoints/step-NNNNNN/`` holding the policy and value head in HF format
(plain ``from_pretrained`` loads it), each learner rank's optimizer, scheduler and RNG state, the replay
buffer's snapshot (items, counters, RNG and the actors' cursors) and ``train_state.json`` (step, version,
counters, evaluations). ``checkpoints/latest`` names the newest complete one; it is replaced atomically,
only after every file of the checkpoint is written.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from arbor.actors.replay import ReplayBuffer
from arbor.core.config import ArborConfig
from arbor.core.errors import ConfigError, DataError

LATEST = "latest"  # checkpoints/latest names the newest complete checkpoint directory
STATE_FILE = "train_state.json"
REPLAY_FILE = "replay.json"


def optimizer_layout(cfg: ArborConfig) -> dict[str, Any]:
    """The config keys the saved optimizer state depends on (it is per rank and laid out by the engine);
    a checkpoint records them and a resume must match them."""
    out: dict[str, Any] = {"resources.learner_ranks": cfg.resources.learner_ranks, "train.engine": cfg.train.engine}
    if cfg.train.engine == "deepspeed":  # the torch engine has no ZeRO stage
        out["train.zero_stage"] = cfg.train.zero_stage
    return out


@dataclass
class TrainState:
    """``train_state.json``: where the run stands, and what its reports need after a resume."""

    step: int = 0
    version: int = 0
    samples_trained: int = 0
    lag_histogram: dict[str, int] = field(default_factory=dict)  # lag -> trained samples
    rl_seconds: float = 0.0
    cursors: dict[str, int] = field(default_factory=dict)  # each rollout actor's next problem (the buffer's)
    reference_path: str | None = None  # the KL reference: the run's init policy
    evals: list[dict[str, Any]] = field(default_factory=list)  # held-out greedy accuracy by step
    before: dict[str, Any] | None = None  # the init's evaluation, once the run has one
    init: str = "sft"  # train.init of the run's first segment: sft (a warm start here) | model (given as is)
    layout: dict[str, Any] = field(default_factory=dict)  # optimizer_layout at save time, by short name

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out |= out.pop("layout")  # stored flat, as "learner_ranks", "engine", "zero_stage"
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TrainState:
        names = {f for f in cls.__dataclass_fields__ if f != "layout"}
        layout = {k: v for k, v in data.items() if k in ("learner_ranks", "engine", "zero_stage")}
        state = cls(**{k: v for k, v in data.items() if k in names}, layout=layout)
        state.step, state.version = int(data["step"]), int(data["version"])  # the two a resume cannot do without
        return state


@dataclass
class ResumeState:
    run_dir: Path
    checkpoint: Path
    state: TrainState


def read_state(path: Path) -> TrainState:
    try:
        return TrainState.from_json(json.loads(path.read_text()))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DataError(f"{path}: cannot read the training state ({type(exc).__name__}: {exc})") from None


def write_state(path: Path, state: TrainState) -> None:
    path.write_text(json.dumps(state.to_json(), indent=2))


def check_resume(cfg: ArborConfig) -> ResumeState | None:
    """The run to continue, with its newest complete checkpoint; ConfigError / DataError name what is wrong."""
    if not cfg.resume:
        return None
    run_dir = Path(cfg.resume)
    if not run_dir.is_dir():
        raise ConfigError(f"config key 'resume': run directory not found: {run_dir}")
    latest = run_dir / "checkpoints" / LATEST
    if not latest.is_file():
        raise ConfigError(f"config key 'resume': {run_dir} has no complete checkpoint ({latest} is missing)")
    ckpt = run_dir / "checkpoints" / latest.read_text().strip()
    state = read_state(ckpt / STATE_FILE)
    for dotted, now in optimizer_layout(cfg).items():
        saved = state.layout.get(dotted.split(".")[1], now)  # (checkpoints before these were recorded pass)
        if saved != now:
            raise ConfigError(
                f"config key '{dotted}' is {now}, but {ckpt} holds optimizer state saved with {saved};"
                f" resume with {dotted}={saved}"
            )
    ReplayBuffer.restore(ckpt / REPLAY_FILE)  # parse it all now: a corrupt snapshot stops before any work
    return ResumeState(run_dir, ckpt, state)


def step_dir(run_dir: Path, step: int) -> Path:
    return run_dir / "checkpoints" / f"step-{step:06d}"


def mark_latest(run_dir: Path, checkpoint: Path) -> None:
    """Point ``checkpoints/latest`` at ``checkpoint``, atomically: a resume sees the old one or the new one."""
    tmp = run_dir / "checkpoints" / f".{LATEST}.tmp"
    tmp.write_text(checkpoint.name)
    os.replace(tmp, run_dir / "checkpoints" / LATEST)
