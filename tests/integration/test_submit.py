"""The cluster path: a real `ray start --head` on 127.0.0.1, a tiny `arbor train` sent with `ray job submit`.

The head gets its own ports and temp dir; at the end the test stops only the processes of that head (each
names its temp dir on its command line) and their children, never another Ray on the machine: `ray stop`
would kill every Ray process of the user, a training run included.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from arbor.core.model import ValueHead, build_policy, hidden_size_of, save_checkpoint
from arbor.launch.cli import parse_args
from arbor.launch.submit import PACKAGES, plain_http_warning, project_root, stage_package, submit_command
from tests.conftest import REPO, TINY_MODEL, train_overrides


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop_head(temp_dir: str) -> None:
    """Kill the Ray processes started under ``temp_dir`` (and their children, the job's driver included)."""
    import psutil

    procs = []
    for proc in psutil.process_iter(["cmdline"]):
        if any(temp_dir in arg for arg in proc.info["cmdline"] or []) and proc.pid != os.getpid():
            procs.append(proc)
            try:
                procs.extend(proc.children(recursive=True))
            except psutil.Error:
                pass
    for proc in procs:
        try:
            proc.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(procs, timeout=30)


def test_overrides_may_follow_the_options_of_submit():
    args = parse_args(["submit", "c.yaml", "a.b=1", "--address", "http://h:8265", "model.path=/m", "--pip", "x==1"])
    assert args.overrides == ["a.b=1", "model.path=/m"] and args.address == "http://h:8265" and args.pip == ["x==1"]
    with pytest.raises(SystemExit) as exit_:
        parse_args(["submit", "c.yaml", "--address", "http://h:8265", "--bogus"])
    assert exit_.value.code == 2


def test_the_uploaded_directory_is_the_configs_project_not_the_shell_directory(tmp_path, monkeypatch):
    assert project_root(REPO / "configs" / "countdown_tiny.yaml") == REPO
    (tmp_path / "proj" / "configs").mkdir(parents=True)
    (tmp_path / "proj" / "configs" / "x.yaml").write_text("")
    monkeypatch.chdir(tmp_path)  # typed from above the project: only the project goes up
    assert project_root(Path("proj/configs/x.yaml")) == tmp_path / "proj"
    (tmp_path / "lone.yaml").write_text("")
    assert project_root(Path("lone.yaml")) == tmp_path


def test_a_token_over_plain_http_to_a_remote_head_is_warned_about():
    assert "unencrypted" in plain_http_warning("http://10.0.0.1:8265", True)
    assert plain_http_warning("https://10.0.0.1:8265", True) is None
    assert plain_http_warning("http://127.0.0.1:8265", True) is None  # a tunnel or a local head
    assert plain_http_warning("http://10.0.0.1:8265", False) is None  # no token to leak


def test_submit_command_names_the_job_and_its_runtime_env(tmp_path):
    package = stage_package(tmp_path)
    cmd = submit_command(
        "configs/countdown_tiny.yaml", ["train.steps=3"], "http://10.0.0.1:8265", str(package), pip=["x==1"]
    )
    assert cmd[cmd.index("--address") + 1] == "http://10.0.0.1:8265"
    env = json.loads(cmd[cmd.index("--runtime-env-json") + 1])
    assert env["working_dir"] == "." and ".venv" in env["excludes"] and env["pip"] == ["x==1"]
    assert env["py_modules"] == [str(package)] and package.name == "arbor"
    # the staged package is the whole of arbor, laid out as installed, and nothing else
    assert sorted(p.name for p in package.iterdir()) == sorted(PACKAGES)
    assert (package / "actors" / "search" / "mcts.py").is_file() and not any(package.rglob("__pycache__"))
    assert cmd[cmd.index("--") + 1 :] == [
        "python",
        "-m",
        "arbor.launch.cli",
        "train",
        "configs/countdown_tiny.yaml",
        "train.steps=3",
    ]


def test_ray_job_submit_runs_training_to_success(tmp_path):
    model, tokenizer = build_policy(TINY_MODEL)
    init = tmp_path / "init"
    save_checkpoint(init, model, tokenizer, ValueHead(hidden_size_of(model)))
    ray_bin = str(Path(sys.executable).parent / "ray")
    temp_dir = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # short: Ray's socket paths have a length limit
    gcs, dashboard = _free_port(), _free_port()
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"  # the job's `python`
    # Token authentication, as a real cluster should run: the head and the submitting client share the token.
    token = Path(temp_dir) / "auth_token"
    token.write_text(secrets.token_hex(32))
    env |= {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token)}
    start = [
        ray_bin,
        "start",
        "--head",
        "--node-ip-address=127.0.0.1",
        f"--port={gcs}",
        "--dashboard-host=127.0.0.1",
        f"--dashboard-port={dashboard}",
        "--include-dashboard=true",
        "--num-cpus=3",
        f"--temp-dir={temp_dir}",
        "--disable-usage-stats",
    ]
    subprocess.run(start, check=True, env=env, capture_output=True, timeout=180)
    try:
        overrides = train_overrides(
            tmp_path / "runs",
            init,
            **{"train.steps": 3, "train.eval_every": 0, "train.checkpoint_every": 0, "run.name": "job"},
        )
        address = f"http://127.0.0.1:{dashboard}"
        package = str(stage_package(tmp_path / "staged"))
        cmd = submit_command("configs/countdown_tiny.yaml", overrides, address, package, job_id="arbor-test-job")
        out = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
        assert out.returncode == 0, (out.stdout + out.stderr)[-4000:]
        status = subprocess.run(
            [ray_bin, "job", "status", "arbor-test-job", "--address", address],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        text = status.stdout + status.stderr
        assert "arbor-test-job' succeeded" in text or "SUCCEEDED" in text, text[-2000:]
    finally:
        stop_head(temp_dir)
        shutil.rmtree(temp_dir, ignore_errors=True)
    result = json.loads((tmp_path / "runs" / "job" / "result.json").read_text())
    assert result["steps"] == 3 and result["version"] == 3
