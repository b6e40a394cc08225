"""Corrupt input stops `arbor train` with status 2 and a message naming the file (and, for a damaged
checkpoint, the one to resume from instead), before Ray starts or anything is written."""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import pytest

from arbor.core.config import load_config
from arbor.core.errors import ConfigError
from arbor.core.integrity import check_weights
from arbor.launch.checkpoints import check_resume
from arbor.launch.cli import main
from arbor.launch.train import run_train
from tests.conftest import DEFAULT_CONFIG, train_overrides

LOCAL = {"train.mode": "local", "train.steps": 4, "train.eval_every": 2, "train.checkpoint_every": 2}


class NotATensor:  # a global that weights_only loading must refuse
    pass


@pytest.fixture(scope="module")
def finished_run(init_ckpt, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("faults")
    result = run_train(load_config(DEFAULT_CONFIG, train_overrides(root, init_ckpt, **LOCAL, **{"run.name": "r"})))
    return Path(result["run_dir"])


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def test_a_truncated_model_path_stops_before_any_run_directory(init_ckpt, tmp_path, capsys):
    model = tmp_path / "model"
    shutil.copytree(init_ckpt, model)
    truncate(model / "model.safetensors")
    root = tmp_path / "runs"
    args = train_overrides(root, model)  # train.mode=async: Ray would start after the checks
    assert main(["train", str(DEFAULT_CONFIG), *args]) == 2
    err = capsys.readouterr().err
    assert f"{model / 'model.safetensors'}: truncated" in err.replace("\n", ""), err
    assert not root.exists()  # nothing written


@pytest.mark.parametrize(
    "damage, named",
    [
        (lambda c: truncate(c / "model.safetensors"), "model.safetensors: truncated"),
        (lambda c: (c / "value_head.safetensors").write_bytes(b"\x00" * 3), "value_head.safetensors: not a readable"),
        (lambda c: (c / "optimizer_rank0.pt").write_bytes(pickle.dumps(NotATensor())), "optimizer_rank0.pt: cannot"),
        (lambda c: (c / "rng_rank0.json").write_text("{"), "rng_rank0.json: cannot read"),
    ],
    ids=["weights", "value_head", "optimizer_pickle", "rng"],
)
def test_a_damaged_checkpoint_names_the_file_and_the_one_to_resume_from(
    finished_run, init_ckpt, tmp_path, capsys, damage, named
):
    run = tmp_path / "r"
    shutil.copytree(finished_run, run)
    damage(run / "checkpoints" / "step-000004")
    args = train_overrides(tmp_path, init_ckpt, resume=str(run))
    before = sorted(p.name for p in run.iterdir())
    assert main(["train", str(DEFAULT_CONFIG), *args]) == 2
    err = capsys.readouterr().err.replace("\n", "")
    assert named in err and f"resume={run / 'checkpoints' / 'step-000002'}" in err, err
    assert sorted(p.name for p in run.iterdir()) == before  # no config-resume file, nothing touched


def test_resuming_from_the_named_earlier_checkpoint_rewrites_the_damaged_one(finished_run, init_ckpt, tmp_path):
    run = tmp_path / "r"
    shutil.copytree(finished_run, run)
    truncate(run / "checkpoints" / "step-000004" / "model.safetensors")
    earlier = run / "checkpoints" / "step-000002"
    again = run_train(load_config(DEFAULT_CONFIG, train_overrides(tmp_path, init_ckpt, **LOCAL, resume=str(earlier))))
    assert again["steps"] == 4 and (run / "checkpoints" / "latest").read_text() == "step-000004"
    check_weights(run / "checkpoints" / "step-000004")  # whole again: written anew, not the damaged one reused


def test_resume_from_another_directory_finds_the_kl_reference(finished_run, init_ckpt, tmp_path, monkeypatch):
    """Older runs recorded the reference relative to where they started; it is found through the run dir."""
    run = tmp_path / "r"
    shutil.copytree(finished_run, run)
    state_file = run / "checkpoints" / "step-000004" / "train_state.json"
    state = json.loads(state_file.read_text())
    shutil.copytree(init_ckpt, run / "checkpoints" / "init")
    state["reference_path"] = "runs/r/checkpoints/init"  # as a run started in another directory wrote it
    state_file.write_text(json.dumps(state))
    monkeypatch.chdir(tmp_path.parent)
    resumed = check_resume(load_config(DEFAULT_CONFIG, train_overrides(tmp_path, init_ckpt, resume=str(run))))
    assert resumed.state.reference_path == str((run / "checkpoints" / "init").resolve())
    state["reference_path"] = "runs/gone/init"
    state_file.write_text(json.dumps(state))
    with pytest.raises(ConfigError, match="reference_path.*does not exist.*train.kl_coef=0"):
        check_resume(
            load_config(DEFAULT_CONFIG, train_overrides(tmp_path, init_ckpt, resume=str(run), **{"train.kl_coef": 0.1}))
        )
