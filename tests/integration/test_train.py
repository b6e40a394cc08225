"""`arbor train` end to end: real local Ray, real DeepSpeed engine, a tiny real model.

One module-scoped async run (with a mid-run checkpoint) serves several tests; resume, sync mode, actor
failure and bad input each start their own short run. Nothing here asserts on wall-clock time.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import threading
import time
from pathlib import Path

import pytest
import ray
import torch
from safetensors.torch import load_file

from arbor.core.config import load_config
from arbor.core.errors import ConfigError, DataError
from arbor.core.model import ValueHead, build_policy, hidden_size_of, save_checkpoint
from arbor.core.tasks import build_task
from arbor.core.tasks.split import ROLLOUT_SEEDS, demonstration_pool, problems_to_skip
from arbor.launch.cli import main
from arbor.launch.train import run_train
from tests.conftest import DEFAULT_CONFIG, TINY_MODEL, train_overrides


@pytest.fixture(scope="module")
def async_run(tmp_path_factory, init_ckpt) -> dict:
    root = tmp_path_factory.mktemp("runs")
    cfg = load_config(DEFAULT_CONFIG, train_overrides(root, init_ckpt))
    return run_train(cfg)


def _metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_async_run_trains_to_budget_within_lag(async_run):
    r = async_run
    assert r["steps"] == 6 and r["version"] == 6  # sync_every=1: one publication per step
    assert r["samples_trained"] == 6 * 16
    assert 0 <= r["max_trained_lag"] <= 8
    assert sum(r["lag_histogram"].values()) == r["samples_trained"]
    assert r["buffer_dropped"] == 0
    b = r["buffer"]
    assert b["inserted"] == b["size"] + b["released"] + b["evicted_stale"] + b["evicted_capacity"]
    assert b["sampled"] == r["samples_trained"]
    actors = list(r["actors"].values())
    assert actors and actors[0]["trees"] > 0 and actors[0]["weight_pulls"] >= 1


def test_async_run_dashboard_metrics_and_artifacts(async_run):
    run_dir = Path(async_run["run_dir"])
    rows = _metrics(run_dir)
    keys = set().union(*rows)
    for key in (
        "learner/policy_loss",
        "learner/value_loss",
        "learner/entropy",
        "learner/kl",
        "learner/is_weight_mean",
        "learner/ess",
        "learner/tokens_per_s",
        "buffer/size",
        "buffer/inserted",
        "buffer/sampled",
        "buffer/evicted_stale",
        "policy_lag/histogram",
        "actors/tokens_generated_per_s",
        "sync/publish_seconds",
        "sync/bytes",
        "search/nodes_per_tree",
        "search/forward_tokens_per_generated_token",
        "eval/greedy_accuracy",
        "eval_init/greedy_accuracy",
        "eval_final/search_accuracy",
    ):
        assert key in keys, key
    assert any(run_dir.glob("trees/step-*.txt"))
    latest = run_dir / "checkpoints" / (run_dir / "checkpoints" / "latest").read_text().strip()
    for name in (
        "model.safetensors",
        "value_head.safetensors",
        "optimizer_rank0.pt",
        "replay.json",
        "train_state.json",
    ):
        assert (latest / name).is_file(), name
    state = json.loads((latest / "train_state.json").read_text())
    assert state["step"] == 6 and state["version"] == 6


def test_resume_continues_at_same_step_and_version(async_run, init_ckpt, tmp_path):
    run_dir = tmp_path / "copy"
    shutil.copytree(async_run["run_dir"], run_dir)
    ckpt3 = run_dir / "checkpoints" / "step-000003"
    (run_dir / "checkpoints" / "latest").write_text("step-000003")
    snap = json.loads((ckpt3 / "replay.json").read_text())
    cfg = load_config(
        DEFAULT_CONFIG, train_overrides(tmp_path, init_ckpt, **{"train.steps": 5, "resume": str(run_dir)})
    )
    r = run_train(cfg)
    assert r["steps"] == 5 and r["version"] == 5
    assert r["samples_trained"] == 5 * 16  # 3 before the checkpoint (restored count) + 2 after
    # The buffer came back from the snapshot: its counters continue from there.
    assert r["buffer"]["inserted"] >= snap["counters"]["inserted"]
    assert r["buffer"]["sampled"] == 5 * 16
    rows = [row for row in _metrics(run_dir) if "learner/loss" in row]
    steps_after = [row["step"] for row in rows][-2:]
    assert steps_after == [4, 5]


def test_sync_mode_trains_on_policy(init_ckpt, tmp_path):
    extra = {"train.mode": "sync", "train.steps": 3, "train.snapshot_every_s": 1e-3}
    r = run_train(load_config(DEFAULT_CONFIG, train_overrides(tmp_path, init_ckpt, **extra)))
    assert r["steps"] == 3
    assert r["max_trained_lag"] <= 1  # a round trains on its own samples; only leftovers wait one round
    assert r["buffer_dropped"] == 0
    # Wall-time snapshots (bench/vs_trl.py's curve points): one per step at this tiny interval, none twice,
    # seconds increasing, and the last one holds the final policy.
    snaps = sorted((Path(r["run_dir"]) / "snapshots").glob("t-*"))
    assert len(snaps) == 3
    seconds = [float(p.name[2:]) for p in snaps]
    assert seconds == sorted(seconds) and seconds[0] > 0
    last = load_file(str(snaps[-1] / "model.safetensors"))
    final = load_file(str(Path(r["checkpoint"]) / "model.safetensors"))
    assert last.keys() == final.keys() and all(torch.equal(last[k], final[k]) for k in final)


@pytest.mark.parametrize("weight_sync", ["collective"])
def test_killed_rollout_actor_restarts_with_current_weights(init_ckpt, tmp_path, weight_sync):
    """Kill the rollout actor mid-run: Ray restarts it, it pulls the current weights before searching,
    the run finishes, and no partial tree reaches the buffer (the buffer refuses one outright). On the
    collective channel the restarted process joins the weight server again with a new gloo pair. The
    object-store channel's restart is the fault campaign's actors phase (test_benchmarks.py, two kills)."""
    extra = {"train.steps": 30, "train.eval_every": 0, "train.checkpoint_every": 0, "run.name": "failure"}
    overrides = train_overrides(tmp_path, init_ckpt, **extra, **{"train.weight_sync": weight_sync})
    cfg = load_config(DEFAULT_CONFIG, overrides)
    ray.init(num_cpus=4, include_dashboard=False, logging_level="ERROR")
    try:
        out: dict = {}
        worker = threading.Thread(target=lambda: out.update(run_train(cfg)))
        worker.start()
        actor = None
        deadline = time.time() + 300
        while actor is None and time.time() < deadline:
            try:
                actor = ray.get_actor("failure/rollout-0")
            except ValueError:
                time.sleep(0.5)
        assert actor is not None
        metrics = tmp_path / "failure" / "metrics.jsonl"
        while time.time() < deadline and not any(  # kill once the learner has published a few versions
            json.loads(line).get("train/version", 0) >= 3
            for line in (metrics.read_text().splitlines() if metrics.exists() else [])
        ):
            time.sleep(0.2)
        ray.kill(actor, no_restart=False)
        worker.join(timeout=600)
        assert not worker.is_alive()
    finally:
        ray.shutdown()
    assert out["steps"] == 30
    restarts = [e for e in out["events"] if e["kind"] == "actor_restarted"]
    assert len(restarts) == 1
    assert restarts[0]["version"] >= 1  # the weights published by then, not the init's version 0
    stats = out["actors"]["rollout-0"]
    assert stats["restarted"] and stats["first_version"] == restarts[0]["version"]
    assert out["buffer_dropped"] == 0


def test_rollouts_skip_held_out_and_sft_demonstrations():
    cfg = load_config(DEFAULT_CONFIG, ["sft.num_problems=2000"])
    task = build_task(cfg.task)
    skip = problems_to_skip(cfg, task)
    pool = {p.key for p in demonstration_pool(task, 2000)}
    shard = [task.train_problem(ROLLOUT_SEEDS + i).key for i in range(300)]
    assert 0 < sum(key in pool for key in shard) < 300  # the cap matters: a shard meets demonstrations
    assert skip == {p.key for p in task.eval_problems()} | pool
    assert problems_to_skip(load_config(DEFAULT_CONFIG, ["sft.num_problems=0"]), task) == {
        p.key for p in task.eval_problems()
    }


def test_buffer_refuses_a_partial_tree():
    from arbor.actors.ledger import check_whole_trees
    from arbor.core.samples import StepSample

    def sample(tree: str, size: int) -> StepSample:
        return StepSample([1], [2], [-0.1], 0, 0.0, 0.5, 0.5, meta={"tree": tree, "tree_size": size})

    check_whole_trees([sample("a", 2), sample("a", 2), sample("b", 1)])
    with pytest.raises(ValueError, match="only whole trees"):
        check_whole_trees([sample("a", 3), sample("a", 3)])


# ---- bad input: clear message, exit status 2, existing checkpoints untouched ----------------------


def _digest(directory: Path) -> dict[str, str]:
    return {
        str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


def test_bad_input_stops_with_message_and_touches_nothing(async_run, init_ckpt, tmp_path, capsys):
    run_dir = tmp_path / "copy"
    shutil.copytree(async_run["run_dir"], run_dir)
    before = _digest(run_dir)
    base = train_overrides(tmp_path, init_ckpt)
    cases = [
        (["train.no_such_key=1"], "unknown config key 'train.no_such_key'"),
        ([f"resume={run_dir}", "resources.learner_gpus=1"], "GPU"),
        ([f"resume={tmp_path / 'missing'}"], "run directory not found"),
        # optimizer state saved without ZeRO cannot load into a ZeRO engine (nor across rank counts)
        ([f"resume={run_dir}", "train.zero_stage=1"], "resume with train.zero_stage=0"),
        ([f"resume={run_dir}", "resources.learner_ranks=2"], "resume with resources.learner_ranks=1"),
    ]
    for extra, message in cases:
        assert main(["train", str(DEFAULT_CONFIG), *base, *extra]) == 2
        assert message in capsys.readouterr().err
    # a corrupt buffer snapshot names the file
    latest = run_dir / "checkpoints" / (run_dir / "checkpoints" / "latest").read_text().strip()
    (latest / "replay.json").write_text('{"format": "arbor.replay/1", "items": [')
    before = _digest(run_dir)
    assert main(["train", str(DEFAULT_CONFIG), *base, f"resume={run_dir}"]) == 2
    err = capsys.readouterr().err
    assert "replay.json" in err and "not valid JSON" in err
    assert _digest(run_dir) == before


def test_errors_are_arbor_errors(tmp_path, init_ckpt):
    cfg = load_config(DEFAULT_CONFIG, train_overrides(tmp_path, init_ckpt, resume=str(tmp_path / "nope")))
    with pytest.raises(ConfigError, match="resume"):
        run_train(cfg)
    bad = tmp_path / "run"
    (bad / "checkpoints" / "step-000001").mkdir(parents=True)
    (bad / "checkpoints" / "latest").write_text("step-000001")
    (bad / "checkpoints" / "step-000001" / "train_state.json").write_text("{}")
    cfg = load_config(DEFAULT_CONFIG, train_overrides(tmp_path, init_ckpt, resume=str(bad)))
    with pytest.raises(DataError, match="train_state.json"):
        run_train(cfg)


def test_placement_across_raylets(init_ckpt, tmp_path):
    """Several raylets on one machine: rollout actors land on the node offering the rollout resource, the two
    learner ranks (one gloo group) on the two learner nodes."""
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    try:
        rollout_node = cluster.add_node(num_cpus=1, resources={"rollout_node": 1})
        learner_nodes = [cluster.add_node(num_cpus=1, resources={"learner_node": 1}) for _ in range(2)]
        cluster.wait_for_nodes()
        overrides = train_overrides(
            tmp_path,
            init_ckpt,
            **{
                "train.steps": 2,
                "train.eval_every": 0,
                "train.checkpoint_every": 0,
                "train.eval_search_simulations": 0,
                "resources.address": cluster.address,
                "resources.learner_ranks": 2,
                "resources.actor_resources": "{rollout_node: 1}",
                "resources.learner_resources": "{learner_node: 1}",
                "resources.strategy": "SPREAD",
            },
        )
        r = run_train(load_config(DEFAULT_CONFIG, overrides))
    finally:
        ray.shutdown()
        cluster.shutdown()
    assert r["steps"] == 2 and r["version"] == 2
    assert r["placement"]["actors"] == [rollout_node.node_id]
    assert sorted(r["placement"]["learner"]) == sorted(n.node_id for n in learner_nodes)


CHAT = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


def test_chat_template_applies_to_the_launchers_evaluation_too(tmp_path):
    """task.data.template=chat with the policy's own template: the launcher builds its held-out set with the
    policy's tokenizer, as the rollout actors do, so evaluation prompts are wrapped like training prompts."""
    model, tokenizer = build_policy(TINY_MODEL)
    tokenizer.chat_template = CHAT
    init = tmp_path / "chat_init"
    save_checkpoint(init, model, tokenizer, ValueHead(hidden_size_of(model)))
    rows = [{"question": f"What is {i} + 1?", "answer": f"{i} + 1 = {i + 1}\n#### {i + 1}"} for i in range(40)]
    data = tmp_path / "g.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    extra = {
        "task.name": "gsm8k",
        "task.data.path": str(data),
        "task.data.template": "chat",
        "task.data.eval_fraction": 0.15,
        "train.mode": "sync",
        "train.steps": 1,
        "train.eval_every": 0,
        "train.checkpoint_every": 0,
        "train.eval_search_simulations": 0,
        "sft.num_problems": 0,
    }
    result = run_train(load_config(DEFAULT_CONFIG, train_overrides(tmp_path / "runs", init, **extra)))
    assert result["steps"] == 1
    (run_dir,) = (tmp_path / "runs").iterdir()
    samples = json.loads((run_dir / "eval_init.json").read_text())["samples"]
    assert samples and all(s["prompt"].startswith("<|user|>What is ") for s in samples)
    assert all(s["prompt"].endswith("<|assistant|>\n") for s in samples)
