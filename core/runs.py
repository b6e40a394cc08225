"""Run directories and the one metrics logger (JSONL always, wandb offline/online/disabled).

Every command writes ``<run.root>/<run.name>/`` holding ``config.yaml`` (the resolved config),
``metrics.jsonl`` (one JSON object per logged step), ``summary.json`` and ``checkpoints/``.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from arbor.core.config import ArborConfig, to_yaml


def make_run_dir(cfg: ArborConfig, command: str) -> Path:
    """Create a fresh run directory and write the resolved config into it; never reuses an existing one."""
    name = cfg.run.name or f"{command}-{time.strftime('%Y%m%d-%H%M%S')}"
    root = Path(cfg.run.root)
    path = root / name
    suffix = 1
    while path.exists():  # two runs in the same second, or a reused run.name: keep what is there
        path = root / f"{name}.{suffix}"
        suffix += 1
    (path / "checkpoints").mkdir(parents=True)
    (path / "config.yaml").write_text(to_yaml(cfg))
    return path


def random_state_to_json(state: tuple) -> list:
    """A ``random.Random().getstate()`` tuple as JSON-able lists (checkpoints are JSON, never pickle)."""
    version, internal, gauss_next = state
    return [version, list(internal), gauss_next]


def random_state_from_json(data: list) -> tuple:
    """The inverse of :func:`random_state_to_json`, ready for ``setstate``."""
    version, internal, gauss_next = data
    return (version, tuple(internal), gauss_next)


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # JSON has no NaN/Inf; keep the fact visible rather than failing the log
    if hasattr(value, "item"):
        return _jsonable(value.item())
    return value


class RunLogger:
    """Sends scalars to ``metrics.jsonl`` and to wandb; one instance per run."""

    def __init__(self, run_dir: Path, cfg: ArborConfig, command: str):
        self.run_dir = Path(run_dir)
        self.metrics_path = self.run_dir / "metrics.jsonl"
        self._file = self.metrics_path.open("a")
        self._wandb = None
        if cfg.wandb.mode != "disabled":
            os.environ.setdefault("WANDB_SILENT", "true")
            import wandb

            self._wandb = wandb.init(
                project=cfg.wandb.project,
                entity=cfg.wandb.entity,
                mode=cfg.wandb.mode,
                dir=str(self.run_dir),
                name=self.run_dir.name,
                job_type=command,
                tags=list(cfg.wandb.tags),
                config=asdict(cfg),
            )

    def log(self, metrics: dict[str, Any], step: int) -> None:
        """Record ``metrics`` at ``step`` (a learner step, or an evaluation point)."""
        self._write(step, {k: _jsonable(v) for k, v in metrics.items()})
        if self._wandb is not None:
            self._wandb.log(metrics, step=step)

    def _write(self, step: int, row: dict[str, Any]) -> None:
        self._file.write(json.dumps({"step": step, "time": time.time(), **row}) + "\n")
        self._file.flush()

    def summary(self, values: dict[str, Any]) -> None:
        """Final numbers of the run: ``summary.json`` and the wandb run summary."""
        (self.run_dir / "summary.json").write_text(json.dumps({k: _jsonable(v) for k, v in values.items()}, indent=2))
        if self._wandb is not None:
            self._wandb.summary.update(values)

    def log_image(self, key: str, path: Path, step: int) -> None:
        """Attach an image file already written to the run directory."""
        if self._wandb is not None:
            import wandb

            self._wandb.log({key: wandb.Image(str(path))}, step=step)

    def log_histogram(self, key: str, counts: dict[int, int], step: int) -> None:
        """A histogram given as value -> count: a dict in the JSONL row, a wandb.Histogram on the dashboard."""
        self._write(step, {key: {str(k): v for k, v in sorted(counts.items())}})
        if self._wandb is not None and counts:
            import numpy as np
            import wandb

            values = np.repeat(np.array(list(counts.keys()), dtype=float), list(counts.values()))
            self._wandb.log({key: wandb.Histogram(values, num_bins=max(1, len(counts)))}, step=step)

    def log_text(self, key: str, text: str, step: int) -> None:
        """A block of text (e.g. a rendered search tree) for inspection on the dashboard."""
        if self._wandb is not None:
            import wandb

            self._wandb.log({key: wandb.Html(f"<pre>{_escape(text)}</pre>")}, step=step)

    def close(self) -> None:
        self._file.close()
        if self._wandb is not None:
            self._wandb.finish()
            self._wandb = None


def _escape(text: str) -> str:
    import html

    return html.escape(text)
