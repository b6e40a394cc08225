"""``arbor submit``: send ``arbor train`` to a Ray cluster as a job (``ray job submit``).

The config is loaded and checked here first, so a typo fails on the laptop, not on the cluster. The job
runs ``python -m arbor.launch.cli train CONFIG ...`` with:

- ``py_modules``: a copy of the ``arbor`` package this command runs from (:func:`stage_package`), so every
  node imports exactly the code that was checked here, whether or not the cluster has Arbor installed;
- ``working_dir``: the project the config belongs to (the nearest directory above it holding a
  ``pyproject.toml`` or a ``configs/`` folder, else the config's own directory; uploaded by Ray, with run
  directories, virtual environments and git data left out), never simply the directory the command is
  typed in, which could be a home directory; the config and relative data paths are found from there.

Inside the job ``RAY_ADDRESS`` is set and ``arbor train`` joins the cluster instead of starting Ray.
"""

from __future__ import annotations

import importlib
import json
import os
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


def project_root(config: Path) -> Path:
    """The directory uploaded as the job's ``working_dir``: the nearest one above ``config`` holding a
    ``pyproject.toml`` or a ``configs/`` folder (a checkout, or a project laid out like one), else the
    config's own directory."""
    config = config.resolve()
    for parent in config.parents:
        if (parent / "pyproject.toml").is_file() or (parent / "configs").is_dir():
            return parent
    return config.parent


def plain_http_warning(address: str, uses_token: bool) -> str | None:
    """What to say when the Ray auth token would cross the network unencrypted (None when it would not)."""
    host = address.split("://", 1)[-1].split("/", 1)[0].rsplit(":", 1)[0].strip("[]")
    if not uses_token or not address.startswith("http://") or host in ("localhost", "127.0.0.1", "::1"):
        return None
    return (
        f"arbor submit: warning: {address} is plain http, so the Ray auth token crosses the"
        " network unencrypted; use https:// behind a TLS proxy, or an SSH tunnel to localhost:8265"
    )


def run_submit(config: str, overrides: list[str], address: str, wait: bool = True, pip: list[str] | None = None) -> int:
    load_config(config, overrides)  # fail here, not on the cluster
    root = project_root(Path(config))
    inside = Path(config).resolve().relative_to(root).as_posix()
    uses_token = os.environ.get("RAY_AUTH_MODE") == "token" or any(
        os.environ.get(k) for k in ("RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")
    )
    warning = plain_http_warning(address, uses_token)
    if warning:
        print(warning, file=sys.stderr)
    print(f"uploading {root} as the job's working directory", flush=True)
    with tempfile.TemporaryDirectory(prefix="arbor-submit-") as tmp:
        package = str(stage_package(Path(tmp)))
        cmd = submit_command(inside, overrides, address, package, working_dir=str(root), wait=wait, pip=pip)
        print("$ " + shlex.join(cmd), flush=True)
        return subprocess.call(cmd)
