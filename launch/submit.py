"""``arbor submit``: send ``arbor train`` to a Ray cluster as a job (``ray job submit``).

The config is loaded and checked here first, so a typo fails on the laptop, not on the cluster. The job
runs ``python -m arbor.launch.cli train CONFIG ...`` with:

- ``py_modules``: a copy of the ``arbor`` package this command runs from (:func:`stage_package`), so every
  node imports exactly the code that was checked here, whether or not the cluster has Arbor installed;
- ``working_dir``: this directory (uploaded by Ray; run directories, virtual environments and git data are
  left out), where the config and any relative data paths are found.

Inside the job ``RAY_ADDRESS`` is set and ``arbor train`` joins the cluster instead of starting Ray.
"""

from __future__ import annotations

import importlib
import json
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from arbor.core.config import load_config

EXCLUDES = [".venv", "runs", ".git", "wandb", "**/__pycache__", ".pytest_cache", "*.egg-info"]
PACKAGES = ("core", "actors", "learner", "reward", "launch")  # arbor's subpackages, one folder each


def stage_package(dest: Path) -> Path:
    """``dest/arbor``: the five ``arbor`` subpackages copied from wherever this process imports them (the
    checkout under an editable install, site-packages otherwise), laid out as the wheel lays them out."""
    root = Path(dest) / "arbor"
    for name in PACKAGES:
        source = Path(importlib.import_module(f"arbor.{name}").__file__).parent
        shutil.copytree(source, root / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return root


def submit_command(
    config: str,
    overrides: list[str],
    address: str,
    package: str,
    working_dir: str = ".",
    pip: list[str] | None = None,
    wait: bool = True,
    job_id: str | None = None,
) -> list[str]:
    """The ``ray job submit`` argv for ``arbor train CONFIG OVERRIDES`` on the cluster at ``address``;
    ``package`` is the staged ``arbor`` directory (:func:`stage_package`) the job imports."""
    runtime_env: dict = {"working_dir": working_dir, "excludes": EXCLUDES, "py_modules": [package]}
    if pip:
        runtime_env["pip"] = pip  # nodes without the dependencies install them (needs a package index)
    cmd = [sys.executable, "-m", "ray.scripts.scripts", "job", "submit", "--address", address]
    cmd += ["--runtime-env-json", json.dumps(runtime_env)]
    if job_id:
        cmd += ["--submission-id", job_id]
    if not wait:
        cmd.append("--no-wait")
    cmd += ["--", "python", "-m", "arbor.launch.cli", "train", config, *overrides]
    return cmd


def run_submit(config: str, overrides: list[str], address: str, wait: bool = True, pip: list[str] | None = None) -> int:
    load_config(config, overrides)  # fail here, not on the cluster
    cfg_path = Path(config)
    if cfg_path.is_absolute() or ".." in cfg_path.parts:
        raise SystemExit(f"arbor submit: the config must lie inside the working directory; got {config}")
    with tempfile.TemporaryDirectory(prefix="arbor-submit-") as tmp:
        cmd = submit_command(config, overrides, address, str(stage_package(Path(tmp))), wait=wait, pip=pip)
        print("$ " + shlex.join(cmd), flush=True)
        return subprocess.call(cmd)
