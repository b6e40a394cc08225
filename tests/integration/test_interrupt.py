"""`arbor train` on the embedded Ray, as a user runs it: listening only on loopback, Ctrl-C finishing the step
in flight and checkpointing it, a dead learner rank named with the way to resume, and no process left behind."""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil

from tests.conftest import DEFAULT_CONFIG, REPO, train_overrides

STEPS = {"train.steps": 500, "train.checkpoint_every": 1000, "train.eval_every": 0, "train.tree_every": 0}


def start(tmp_path: Path, init: Path, name: str) -> subprocess.Popen:
    args = train_overrides(tmp_path, init, **STEPS, **{"run.name": name, "train.eval_search_simulations": 0})
    env = {k: v for k, v in os.environ.items() if k not in ("MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE")}
    cmd = [sys.executable, "-m", "arbor.launch.cli", "train", str(DEFAULT_CONFIG), *args]
    # its own session, as a shell gives a job: a Ctrl-C goes to the whole process group
    return subprocess.Popen(
        cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )


def trained_steps(run_dir: Path) -> list[int]:
    try:
        lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    except OSError:
        return []
    return [r["step"] for r in map(json.loads, lines) if "learner/loss" in r]


def wait_for_steps(proc: subprocess.Popen, run_dir: Path, n: int, timeout: float = 300) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline and len(trained_steps(run_dir)) < n:
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        time.sleep(0.5)
    assert len(trained_steps(run_dir)) >= n, "training did not start in time"


def tree(proc: subprocess.Popen) -> list[psutil.Process]:
    root = psutil.Process(proc.pid)
    return [root, *root.children(recursive=True)]


def listening(procs: list[psutil.Process]) -> list[tuple[str, str, int]]:
    out = []
    for p in procs:
        try:
            for c in p.net_connections(kind="inet"):
                if c.status == psutil.CONN_LISTEN:
                    out.append((p.name(), c.laddr.ip, c.laddr.port))
        except psutil.Error:
            continue
    return out


def loopback(ip: str) -> bool:
    addr = ipaddress.ip_address(ip)
    mapped = getattr(addr, "ipv4_mapped", None)  # ::ffff:127.0.0.1, a dual-stack socket's loopback
    return (mapped or addr).is_loopback


def left_running(procs: list[psutil.Process]) -> list[str]:
    gone, alive = psutil.wait_procs(procs, timeout=30)
    return [f"{p.pid} {p.name()}" for p in alive if p.status() != psutil.STATUS_ZOMBIE]


@contextlib.contextmanager
def training(tmp_path: Path, init: Path, name: str) -> Iterator[tuple[subprocess.Popen, Path, list[psutil.Process]]]:
    """A run trained 2 steps: (its process, run directory, process tree); the tree is killed if it outlives
    the test."""
    proc = start(tmp_path, init, name)
    run_dir = tmp_path / name
    try:
        wait_for_steps(proc, run_dir, 2)
        yield proc, run_dir, tree(proc)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)


def test_ctrl_c_checkpoints_the_step_in_flight_and_the_embedded_ray_listens_on_loopback(init_ckpt, tmp_path):
    with training(tmp_path, init_ckpt, "sigint") as (proc, run_dir, procs):
        ports = listening(procs)
        assert ports, "no listening socket found: the check would prove nothing"
        outside = [p for p in ports if not loopback(p[1])]
        assert not outside, f"listening beyond loopback: {outside}"
        os.killpg(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=180)
    assert proc.returncode == 130, err[-3000:]
    assert "Traceback" not in err and f"resume={run_dir}" in err, err[-3000:]
    latest = (run_dir / "checkpoints" / "latest").read_text()
    state = json.loads((run_dir / "checkpoints" / latest / "train_state.json").read_text())
    assert state["step"] == max(trained_steps(run_dir)) >= 2  # every step trained is in the checkpoint
    assert not left_running(procs)


def test_a_dead_learner_rank_is_named_with_the_checkpoint_to_resume_from(init_ckpt, tmp_path):
    with training(tmp_path, init_ckpt, "rankdied") as (proc, run_dir, procs):
        ranks = [p for p in procs if "LearnerActor" in " ".join(p.cmdline())]
        assert len(ranks) == 1, [p.cmdline()[:2] for p in procs]
        ranks[0].kill()
        out, err = proc.communicate(timeout=180)
    assert proc.returncode == 1, err[-3000:]
    assert "learner rank 0 died" in err and "Traceback" not in err, err[-3000:]
    assert "no checkpoint was written yet" in err or f"resume={run_dir}" in err
    assert not left_running(procs)
