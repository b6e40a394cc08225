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

import torch

from arbor.actors.replay import ReplayBuffer
from arbor.core.config import ArborConfig
from arbor.core.errors import ArborError, ConfigError, DataError
from arbor.core.integrity import check_weights

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
    write_atomic(path, json.dumps(state.to_json(), indent=2))


def write_atomic(path: Path, text: str) -> None:
    """``path`` holds ``text`` or what it held before, never a torn mix (written aside, flushed, renamed)."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def check_resume(cfg: ArborConfig) -> ResumeState | None:
    """The run to continue, with its newest complete checkpoint (``resume=RUN_DIR``) or the one named
    (``resume=RUN_DIR/checkpoints/step-N``), every file of it checked; ConfigError / DataError name what is
    wrong and, for a damaged checkpoint, the earlier one to resume from instead."""
    if not cfg.resume:
        return None
    given = Path(cfg.resume)
    if not given.is_dir():
        raise ConfigError(f"config key 'resume': run directory not found: {given}")
    if given.parent.name == "checkpoints" and (given / STATE_FILE).is_file():
        run_dir, ckpt = given.parent.parent, given
    else:
        run_dir, latest = given, latest_name(given)
        if latest is None:
            missing = run_dir / "checkpoints" / LATEST
            raise ConfigError(f"config key 'resume': {run_dir} has no complete checkpoint ({missing} is missing)")
        ckpt = run_dir / "checkpoints" / latest
    try:
        state = read_state(ckpt / STATE_FILE)
    except ArborError as exc:
        raise DataError(f"{exc}; {instead(run_dir, ckpt)}") from None
    for dotted, now in optimizer_layout(cfg).items():
        saved = state.layout.get(dotted.split(".")[1], now)  # (checkpoints before these were recorded pass)
        if saved != now:
            raise ConfigError(
                f"config key '{dotted}' is {now}, but {ckpt} holds optimizer state saved with {saved};"
                f" resume with {dotted}={saved}"
            )
    try:
        check_checkpoint_files(ckpt, cfg.resources.learner_ranks)
    except ArborError as exc:
        raise DataError(f"{exc}; {instead(run_dir, ckpt)}") from None
    if state.reference_path:
        state.reference_path = locate_reference(run_dir, state.reference_path)
        if cfg.train.kl_coef and not Path(state.reference_path).is_dir():
            raise ConfigError(
                f"config key 'resume': the KL reference of {run_dir} ({ckpt / STATE_FILE}: reference_path) is"
                f" {state.reference_path}, which does not exist; restore it there, or resume with train.kl_coef=0"
            )
    return ResumeState(run_dir, ckpt, state)


def check_checkpoint_files(ckpt: Path, ranks: int) -> None:
    """Every file a resume loads is whole: the weights (headers), each rank's optimizer state (loaded with
    ``weights_only``, memory-mapped: a pickle of anything but tensors is refused), the RNG states and the
    buffer snapshot (parsed in full, so a corrupt one stops before any work)."""
    from arbor.learner.engine import deepspeed_checkpoint_globals
    from arbor.learner.rank import OPTIM_FILE, RNG_FILE

    check_weights(ckpt)
    for rank in range(ranks):
        optim, rng = ckpt / OPTIM_FILE.format(rank=rank), ckpt / RNG_FILE.format(rank=rank)
        try:
            with torch.serialization.safe_globals(deepspeed_checkpoint_globals()):
                torch.load(optim, weights_only=True, map_location="cpu", mmap=True)
        except Exception as exc:  # noqa: BLE001 - torch raises many types for a bad file; each is named
            raise DataError(f"{optim}: cannot be loaded as optimizer state ({type(exc).__name__}: {exc})") from None
        try:
            json.loads(rng.read_text())
        except (OSError, ValueError) as exc:
            raise DataError(f"{rng}: cannot read the RNG state ({type(exc).__name__}: {exc})") from None
    try:
        vocab = int(json.loads((ckpt / "config.json").read_text())["vocab_size"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DataError(f"{ckpt / 'config.json'}: no model vocab_size ({type(exc).__name__}: {exc})") from None
    ReplayBuffer.restore(ckpt / REPLAY_FILE, vocab_size=vocab)


def instead(run_dir: Path, damaged: Path) -> str:
    """What to do about a damaged checkpoint: the newest earlier complete one to resume from."""
    root = run_dir / "checkpoints"
    older = sorted(
        (p for p in root.glob("step-*") if p.name < damaged.name and (p / STATE_FILE).is_file()), reverse=True
    )
    for candidate in older:
        try:
            read_state(candidate / STATE_FILE)
            check_weights(candidate)
        except ArborError:
            continue
        return f"resume from the checkpoint before it instead: resume={candidate}"
    return "no earlier complete checkpoint is left to resume from"


def locate_reference(run_dir: Path, path: str) -> str:
    """The KL reference recorded in a run's state, as an absolute path. Runs record it absolute; older ones
    recorded it relative to the directory they were started in, which is found again through the run
    directory's own name (``runs/NAME/checkpoints/init`` -> ``RUN_DIR/checkpoints/init``)."""
    ref = Path(path)
    if ref.is_absolute():
        return str(ref)
    if run_dir.name in ref.parts:
        inside = ref.parts[ref.parts.index(run_dir.name) + 1 :]
        candidate = run_dir.joinpath(*inside)
        if candidate.exists():
            return str(candidate.resolve())
    return str(ref.resolve())


def step_dir(run_dir: Path, step: int) -> Path:
    return run_dir / "checkpoints" / f"step-{step:06d}"


def partial_dir(run_dir: Path, step: int) -> Path:
    """Where the checkpoint of ``step`` is written before it is renamed to :func:`step_dir`."""
    return run_dir / "checkpoints" / f".tmp-step-{step:06d}"


def is_complete(checkpoint: Path, step: int) -> bool:
    """Whether ``checkpoint`` is a finished checkpoint of ``step``: its state file, written last, says so."""
    try:
        return read_state(checkpoint / STATE_FILE).step == step
    except DataError:
        return False


def latest_name(run_dir: Path) -> str | None:
    """The directory name ``checkpoints/latest`` holds, if there is one."""
    latest = run_dir / "checkpoints" / LATEST
    return latest.read_text().strip() if latest.is_file() else None


def mark_latest(run_dir: Path, checkpoint: Path) -> None:
    """Point ``checkpoints/latest`` at ``checkpoint``, atomically: a resume sees the old one or the new one."""
    write_atomic(run_dir / "checkpoints" / LATEST, checkpoint.name)


def checkpoints_to_prune(run_dir: Path, keep: int, evals: list[dict[str, Any]]) -> list[Path]:
    """The step checkpoints ``train.keep_checkpoints=keep`` lets go: all but the newest ``keep``, the one
    ``latest`` names and the one with the best held-out greedy accuracy (``evals``, by step); ``keep=0`` keeps
    every one. Leftover partial directories (``.tmp-step-*``, from a killed write) go too."""
    root = run_dir / "checkpoints"
    partial = sorted(root.glob(".tmp-step-*"))
    if keep <= 0:
        return partial
    steps = sorted((int(p.name.split("-")[1]), p) for p in root.glob("step-*") if p.name.split("-")[1].isdigit())
    latest = latest_name(run_dir)
    kept = {p for _, p in steps[-keep:]} | {p for _, p in steps if p.name == latest}
    scored = {int(e["step"]): e["greedy_accuracy"] for e in evals if e.get("greedy_accuracy") is not None}
    with_eval = [(scored[n], n, p) for n, p in steps if n in scored]
    if with_eval:
        kept.add(max(with_eval, key=lambda t: (t[0], t[1]))[2])  # the best; the later one on a tie
    return partial + [p for _, p in steps if p not in kept]
