"""The processes bench/faults.py starts and kills: one `arbor train` run as a user's shell runs it, and what
its run directory says (learner-step rows, the latest checkpoint)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil

from arbor.launch.checkpoints import is_complete, latest_name

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs" / "countdown_tiny.yaml"


class Run:
    """One `arbor train` process (its own session, logs to files) and what it wrote."""

    def __init__(self, root: Path, name: str, overrides: dict[str, Any], resume: bool = False):
        self.root, self.name, self.dir = root, name, root / name
        args = {**overrides, "run.root": str(root), "run.name": name}
        if resume:
            args["resume"] = str(self.dir)
        self.first_row = len(rows(self.dir))  # this segment's rows come after these
        self.resumed_from = step_of_latest(self.dir) if resume else 0
        k = len(list(root.glob(f"{name}.*.err")))
        self.out, self.err = root / f"{name}.{k}.out", root / f"{name}.{k}.err"
        env = {k: v for k, v in os.environ.items() if k not in ("MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE")}
        cmd = [sys.executable, "-m", "arbor.launch.cli", "train", str(CONFIG), *(f"{k}={v}" for k, v in args.items())]
        with open(self.out, "w") as out, open(self.err, "w") as err:
            self.proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=out, stderr=err, start_new_session=True)
        self.started = time.time()

    def alive(self) -> bool:
        return self.proc.poll() is None

    def processes(self) -> list[psutil.Process]:
        try:
            root = psutil.Process(self.proc.pid)
            return [root, *root.children(recursive=True)]
        except psutil.Error:
            return []

    def named(self, cls: str) -> list[psutil.Process]:
        """Live processes of this run whose command line names ``cls`` (Ray titles a worker by its actor)."""
        out = []
        for p in self.processes()[1:]:
            try:
                if cls in " ".join(p.cmdline()) and p.status() != psutil.STATUS_ZOMBIE:
                    out.append(p)
            except psutil.Error:
                continue
        return out

    def steps(self) -> list[int]:
        return [r["step"] for r in rows(self.dir)[self.first_row :]]

    def wait_steps(self, n: int, timeout: float = 300) -> bool:
        """Until this segment trained ``n`` steps (False: it ended or timed out first)."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            if len(self.steps()) >= n:
                return True
            if not self.alive():
                return False
            time.sleep(0.2)
        return False

    def writing_checkpoint(self) -> bool:
        """Whether this segment is writing a checkpoint now (its ``.tmp-step-*`` directory exists; one left by
        an earlier segment is older than this one)."""
        try:
            entries = list(os.scandir(self.dir / "checkpoints"))
        except OSError:
            return False
        return any(e.name.startswith(".tmp-step-") and _mtime(e) > self.started for e in entries)

    def wait(self, timeout: float = 600) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill_group()
            return -9

    def kill_group(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()

    def stderr(self) -> str:
        return self.err.read_text(errors="replace")

    def result(self) -> dict[str, Any]:
        path = self.dir / "result.json"
        return json.loads(path.read_text()) if path.is_file() else {}


def rows(run_dir: Path) -> list[dict[str, Any]]:
    """The learner-step rows of a run's metrics.jsonl (a line cut by a kill is skipped)."""
    try:
        lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    except OSError:
        return []
    out = []
    for line in lines:
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if "learner/loss" in row:
            out.append(row)
    return out


def step_of_latest(run_dir: Path) -> int:
    name = latest_name(run_dir)
    return int(name.split("-")[1]) if name else 0


def latest_is_complete(run_dir: Path) -> bool:
    name = latest_name(run_dir)
    return name is not None and is_complete(run_dir / "checkpoints" / name, int(name.split("-")[1]))


def wait_until(pred, timeout: float) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if pred():
            return True
        time.sleep(0.2)
    return False


def _mtime(entry: os.DirEntry) -> float:
    try:
        return entry.stat().st_mtime
    except OSError:
        return 0.0  # renamed into place or removed meanwhile


def left_running(procs: list[psutil.Process], grace: float = 30) -> list[psutil.Process]:
    _, alive = psutil.wait_procs(procs, timeout=grace)
    return [p for p in alive if _status(p) not in (psutil.STATUS_ZOMBIE, None)]


def name_of(p: psutil.Process) -> str:
    try:
        return " ".join(p.cmdline())[:40] or p.name()
    except psutil.Error:
        return "?"


def _status(p: psutil.Process) -> str | None:
    try:
        return p.status()
    except psutil.Error:
        return None
