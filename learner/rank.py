"""One learner rank: a process in the learner's torch.distributed group (gloo on CPU, nccl on GPU).

The launcher makes W of these Ray actors, gives them the same rendezvous address, and drives them in
lock step: every ``step`` call hands all ranks the same sampled batch (one object in the store, fetched
by each rank), each rank trains on its slice, and DeepSpeed all-reduces the gradients. Rank 0 publishes
the weights every ``train.sync_every`` steps through the weight channel (a new policy version), evaluates
and writes checkpoints. Every rank saves and loads its own optimizer shard.
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path
from typing import Any

import torch

from arbor.core.channels import weight_channel
from arbor.core.config import ArborConfig, ModelConfig
from arbor.core.model import build_policy, save_checkpoint, value_head_for
from arbor.core.runs import random_state_from_json, random_state_to_json
from arbor.core.samples import StepSample
from arbor.learner.actor_critic import ActorCriticLearner
from arbor.learner.engine import init_process_group_if_needed

OPTIM_FILE = "optimizer_rank{rank}.pt"
RNG_FILE = "rng_rank{rank}.json"


def deepspeed_checkpoint_globals() -> list[Any]:
    """The plain DeepSpeed types a ZeRO optimizer's state dict holds (its stage, loss scaler and parameter
    fragment addresses): allowed by name to ``torch.load(weights_only=True)``, nothing else is."""
    try:
        from deepspeed.runtime.fp16.loss_scaler import DynamicLossScaler, LossScaler
        from deepspeed.runtime.zero.config import ZeroStageEnum
        from deepspeed.utils.tensor_fragment import fragment_address
    except ImportError:  # the torch engine's checkpoints hold none of them
        return []
    return [DynamicLossScaler, LossScaler, ZeroStageEnum, fragment_address]


class LearnerRank:
    """A learner rank's state and calls (wrapped with ``ray.remote`` by the launcher)."""

    def __init__(
        self,
        cfg: ArborConfig,
        rank: int,
        world: int,
        init_path: str,
        coordinator: Any,
        reference_path: str | None = None,
    ):
        torch.set_num_threads(cfg.resources.learner_threads)
        self.cfg, self.rank, self.world = cfg, rank, world
        self.init_path = init_path
        self.reference_path = reference_path or init_path  # the frozen KL reference: the run's init policy
        self.device = "cuda" if cfg.resources.learner_gpus > 0 and torch.cuda.is_available() else "cpu"
        self.channel = weight_channel(
            cfg.train.weight_sync,
            coordinator,
            learner_on_gpu=self.device == "cuda",
            actors_on_gpu=cfg.resources.actor_gpus > 0,
            name=f"learner-{rank}",
        )
        self.version = 0
        self.steps_since_publish = 0

    def address(self) -> tuple[str, int]:
        """This node's IP and a free port: the rendezvous of the group, asked of rank 0."""
        import socket

        import ray

        with socket.socket() as s:
            s.bind(("", 0))
            port = s.getsockname()[1]
        return ray.util.get_node_ip_address(), port

    def setup(self, master_addr: str, master_port: int, start_version: int = 0) -> int:
        """Join the process group and build the model, value head and engine (all ranks at once)."""
        os.environ.update(
            RANK=str(self.rank),
            LOCAL_RANK="0",
            WORLD_SIZE=str(self.world),
            MASTER_ADDR=master_addr,
            MASTER_PORT=str(master_port),
        )
        cfg = self.cfg
        if cfg.train.engine == "deepspeed" or self.world > 1:
            init_process_group_if_needed("nccl" if self.device == "cuda" else "gloo")
        model, self.tokenizer = build_policy(ModelConfig(path=self.init_path))
        head = value_head_for(model, self.init_path)
        reference = None
        if cfg.train.kl_coef:
            reference, _ = build_policy(ModelConfig(path=self.reference_path))
            reference.requires_grad_(False)
        if self.device == "cuda":
            model, head = model.cuda(), head.cuda()
            reference = reference.cuda() if reference is not None else None
        torch.manual_seed(cfg.train.seed * 1000 + self.rank)
        self.learner = ActorCriticLearner(
            model,
            head,
            cfg.train,
            pad_id=self.tokenizer.pad_token_id,
            max_len=int(getattr(model.config, "max_position_embeddings", cfg.model.max_seq_len)),
            temperature=cfg.search.temperature,
            rank_batch_size=cfg.train.batch_size // self.world,
            reference=reference,
        )
        self.version = start_version
        return self.rank

    # ---- training -----------------------------------------------------------------------------

    def publish(self) -> dict[str, float]:
        """Rank 0 publishes the current weights as ``self.version`` (object store, or the collective server)."""
        if self.rank != 0:
            return {}
        return self.channel.publish(self.version, self.learner.publish_state(self.channel.device))

    def step(self, samples: list[StepSample] | None, publish: bool | None = None) -> dict[str, Any] | None:
        """Train on this rank's slice of ``samples`` (the whole batch, shared); None when there was no batch.

        ``publish`` None publishes every ``train.sync_every`` steps (async); True / False force it (sync rounds).
        """
        if samples is None:
            return None
        n = len(samples) // self.world
        mine = samples[self.rank * n : (self.rank + 1) * n]
        metrics: dict[str, Any] = self.learner.update(mine, self.version)
        if self.rank == 0:  # lag against the version that trained on them (before this step's publication)
            metrics["lags"] = [self.version - s.policy_version for s in samples if not s.meta.get("demonstration")]
        self.steps_since_publish += 1
        due = self.steps_since_publish >= self.cfg.train.sync_every if publish is None else publish
        if due:
            self.version += 1
            self.steps_since_publish = 0
            metrics |= self.publish()
        metrics["version"] = self.version
        metrics["batch"] = len(samples)
        return metrics

    def with_policy(self, fn, *args: Any) -> Any:
        """Run ``fn(model, tokenizer, *args)`` on the current policy in eval mode (the launcher's held-out
        evaluation runs here, next to the weights, without the learner importing the actors package)."""
        model = self.learner.model
        model.eval()
        try:
            with torch.no_grad():
                return fn(model, self.tokenizer, *args)
        finally:
            model.train()

    # ---- checkpoints --------------------------------------------------------------------------

    def save(self, path: str, meta: dict[str, Any]) -> str:
        """Write this rank's part of a checkpoint: rank 0 the HF model + value head, every rank its optimizer
        state, scheduler and RNG states."""
        path_ = Path(path)
        path_.mkdir(parents=True, exist_ok=True)
        if self.rank == 0:
            save_checkpoint(path_, self.learner.model, self.tokenizer, self.learner.value_head, meta=meta)
        engine = self.learner.engine
        optim = getattr(engine, "optimizer", None)
        sched = getattr(engine, "scheduler", None)
        state = {
            "optimizer": optim.state_dict() if optim is not None else {},
            "scheduler": sched.state_dict() if sched is not None else {},
        }
        torch.save(state, path_ / OPTIM_FILE.format(rank=self.rank))
        rng = {
            "torch": torch.get_rng_state().tolist(),
            "python": random_state_to_json(random.getstate()),
            "version": self.version,
            "steps_since_publish": self.steps_since_publish,
            "learner_steps": self.learner.steps,
            "skipped_nonfinite": self.learner.skipped_nonfinite,
        }
        (path_ / RNG_FILE.format(rank=self.rank)).write_text(json.dumps(rng))
        return str(path_)

    def load(self, path: str) -> int:
        """Restore optimizer, scheduler and RNG state saved by ``save`` (weights came in through init_path)."""
        path_ = Path(path)
        engine = self.learner.engine
        deepspeed_engine = getattr(engine, "engine", None)
        zero = deepspeed_engine is not None and deepspeed_engine.zero_optimization_stage() > 0
        with torch.serialization.safe_globals(deepspeed_checkpoint_globals()):
            state = torch.load(path_ / OPTIM_FILE.format(rank=self.rank), weights_only=True, map_location="cpu")
        if state["optimizer"]:
            if zero:
                # A ZeRO optimizer takes a list indexed by data-parallel rank and reads only its own entry
                # (same world size, non-elastic), so the other ranks' files stay on disk. Its fp32 master
                # partition comes from the file, not rebuilt from (possibly bf16) weights.
                states = [None] * self.world
                states[self.rank] = state["optimizer"]
                engine.optimizer.load_state_dict(states, load_from_fp32_weights=True)
            else:
                engine.optimizer.load_state_dict(state["optimizer"])
        if state["scheduler"]:
            engine.scheduler.load_state_dict(state["scheduler"])
        rng = json.loads((path_ / RNG_FILE.format(rank=self.rank)).read_text())
        torch.set_rng_state(torch.tensor(rng["torch"], dtype=torch.uint8))
        random.setstate(random_state_from_json(rng["python"]))
        self.version = int(rng["version"])
        self.steps_since_publish = int(rng["steps_since_publish"])
        self.learner.steps = int(rng["learner_steps"])
        self.learner.skipped_nonfinite = int(rng["skipped_nonfinite"])
        return self.version

    def close(self) -> None:
        """Release the weight channel (the collective channel's server thread and pair groups)."""
        self.channel.close()

    def weights_digest(self) -> float:
        """A cheap fingerprint of the weights (sum of all parameters), for resume checks."""
        return float(sum(p.detach().double().sum() for p in self.learner.net.parameters()))

    def ping(self) -> dict[str, Any]:
        import ray

        return {"rank": self.rank, "node_id": ray.get_runtime_context().get_node_id()}
