"""``arbor submit``: send ``arbor train`` to a Ray cluster as a job (``ray job submit``).

The config is loaded and checked here first, so a typo fails on the laptop, not on the cluster. The job
runs ``python -m launch.cli train CONFIG ...`` with this checkout as its ``working_dir`` (uploaded by
Ray; run directories, virtual environments and git data are left out), so every node imports the same
code. Inside the job ``RAY_ADDRESS`` is set and ``arbor train`` joins the cluster instead of starting Ray.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from pathlib import Path

from core.config import load_config

EXCLUDES = [".venv", "runs", ".git", "wandb", "**/__pycache__", ".pytest_cache", "*.egg-info"]


def submit_command(
    config: str,
    overrides: list[str],
    address: str,
    working_dir: str = ".",
    pip: list[str] | None = None,
    wait: bool = True,
    job_id: str | None = None,
) -> list[str]:
    """The ``ray job submit`` argv for ``arbor train CONFIG OVERRIDES`` on the cluster at ``address``."""
    runtime_env: dict = {"working_dir": working_dir, "excludes": EXCLUDES}
    if pip:
        runtime_env["pip"] = pip  # nodes without the dependencies install them (needs a package index)
    cmd = [sys.executable, "-m", "ray.scripts.scripts", "job", "submit", "--address", address]
    cmd += ["--runtime-env-json", json.dumps(runtime_env)]
    if job_id:
        cmd += ["--submission-id", job_id]
    if not wait:
        cmd.append("--no-wait")
    cmd += ["--", "python", "-m", "launch.cli", "train", config, *overrides]
    return cmd


def run_submit(config: str, overrides: list[str], address: str, wait: bool = True, pip: list[str] | None = None) -> int:
    load_config(config, overrides)  # fail here, not on the cluster
    cfg_path = Path(config)
    if cfg_path.is_absolute() or ".." in cfg_path.parts:
        raise SystemExit(f"arbor submit: the config must lie inside the working directory; got {config}")
    cmd = submit_command(config, overrides, address, wait=wait, pip=pip)
    print("$ " + shlex.join(cmd), flush=True)
    return subprocess.call(cmd)
