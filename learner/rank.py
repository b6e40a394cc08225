"""One learner rank: a member of the learner's torch.distributed group (gloo on CPU, nccl on GPU), or the
whole learner in one process (``train.mode=local``).

The launcher drives W of these in lock step: every ``step`` call hands all ranks the same sampled batch,
each rank trains on its slice, and the engine all-reduces the gradients. Rank 0 publishes the weights
every ``train.sync_every`` steps through its weight channel (a new policy version). Every rank saves and
loads its own optimizer shard. Plain Python: the Ray actor that wraps it lives in
``arbor.launch.distributed.actors``, and the channel comes in from whoever builds the rank.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from arbor.core.channels import WeightChannel
from arbor.core.config import ArborConfig, behaviour_temperature
from arbor.core.model import build_policy, save_checkpoint, value_head_for
from arbor.core.runs import random_state_from_json, random_state_to_json
from arbor.core.samples import StepSample, in_policy_lineage
from arbor.learner.actor_critic import ActorCriticLearner
from arbor.learner.engine import deepspeed_checkpoint_globals, init_process_group_if_needed

OPTIM_FILE = "optimizer_rank{rank}.pt"
RNG_FILE = "rng_rank{rank}.json"


@dataclass(frozen=True)
class LearnerStep:
    """What one learner step reports back to the driver."""

    metrics: dict[str, float]  # learner/..., and sync/... when the step published
    version: int  # the policy version after the step (a publication makes a new one)
    batch: int  # samples in the whole batch (over all ranks)
    lags: list[int] = field(default_factory=list)  # rank 0: version minus sample version, per policy sample


class LearnerRank:
    """A learner rank's state and calls."""

    def __init__(
        self,
        cfg: ArborConfig,
        rank: int,
        world: int,
        init_path: str,
        channel: WeightChannel,
        reference_path: str | None = None,
    ):
        self.cfg, self.rank, self.world = cfg, rank, world
        self.init_path = init_path
        self.reference_path = reference_path or init_path  # the frozen KL reference: the run's init policy
        self.device = "cuda" if cfg.resources.learner_gpus > 0 and torch.cuda.is_available() else "cpu"
        self.channel = channel
        self.version = 0
        self.steps_since_publish = 0
        self.updates = 0  # update calls in this process (debug.nan_loss_every counts them)

    def setup(
        self,
        master_addr: str | None = None,
        master_port: int | None = None,
        start_version: int = 0,
        store_file: str | None = None,
    ) -> int:
        """Join the process group (at ``master_addr:master_port``, or through ``store_file`` when every rank
        runs on this machine; neither: a group of one in this process) and build the model, value head and
        engine (all ranks at once)."""
        if master_addr is not None:
            os.environ.update(
                RANK=str(self.rank),
                LOCAL_RANK="0",
                WORLD_SIZE=str(self.world),
                MASTER_ADDR=master_addr,
                MASTER_PORT=str(master_port),
            )
        cfg = self.cfg
        if store_file:
            os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")  # one machine: gloo's pair sockets on loopback
        if cfg.train.engine == "deepspeed" or self.world > 1:
            init_process_group_if_needed("nccl" if self.device == "cuda" else "gloo", store_file)
        model, self.tokenizer = build_policy(dataclasses.replace(cfg.model, path=self.init_path))
        head = value_head_for(model, self.init_path)
        reference = None
        if cfg.train.kl_coef:
            reference, _ = build_policy(dataclasses.replace(cfg.model, path=self.reference_path))
            reference.requires_grad_(False)
        if self.device == "cuda":
            model, head = model.cuda(), head.cuda()
            reference = reference.cuda() if reference is not None else None
        torch.manual_seed(cfg.train.seed * 1000 + self.rank)
        self.learner = build_learner(
            cfg, model, head, self.tokenizer.pad_token_id, world=self.world, reference=reference
        )
        self.version = start_version
        return self.rank

    # ---- training -----------------------------------------------------------------------------

    def publish(self) -> dict[str, float]:
        """Rank 0 publishes the current weights as ``self.version`` through its channel."""
        if self.rank != 0:
            return {}
        return self.channel.publish(self.version, self.learner.publish_state(self.channel.device))

    def step(self, samples: list[StepSample] | None, publish: bool | None = None) -> LearnerStep | None:
        """Train on this rank's slice of ``samples`` (the whole batch, shared); None when there was no batch.

        ``publish`` None publishes every ``train.sync_every`` steps (async); True / False force it (sync rounds).
        """
        if samples is None:
            return None
        n = len(samples) // self.world
        mine = samples[self.rank * n : (self.rank + 1) * n]
        debug = self.cfg.debug
        self.updates += 1
        if debug.nan_loss_every and self.updates % debug.nan_loss_every == 0:  # fault injection (bench/faults.py)
            mine = [dataclasses.replace(s, behaviour_logprobs=[math.nan] * len(s.action_tokens)) for s in mine]
        t0 = time.perf_counter()
        metrics = self.learner.update(mine, self.version)
        if debug.learner_slowdown > 1:  # fault injection: a learner this many times slower (backpressure)
            time.sleep((debug.learner_slowdown - 1) * (time.perf_counter() - t0))
        # rank 0: lag against the version that trained on them (before this step's publication)
        lags = [self.version - s.policy_version for s in samples if in_policy_lineage(s)] if not self.rank else []
        self.steps_since_publish += 1
        due = self.steps_since_publish >= self.cfg.train.sync_every if publish is None else publish
        if due:
            self.version += 1
            self.steps_since_publish = 0
            metrics |= self.publish()
        return LearnerStep(metrics, self.version, len(samples), lags)

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
        torch.save(self.learner.engine.optimizer_state(), path_ / OPTIM_FILE.format(rank=self.rank))
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
        with torch.serialization.safe_globals(deepspeed_checkpoint_globals()):
            state = torch.load(path_ / OPTIM_FILE.format(rank=self.rank), weights_only=True, map_location="cpu")
        self.learner.engine.load_optimizer_state(state)
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


def build_learner(
    cfg: ArborConfig, model: Any, head: Any, pad_id: int, *, world: int = 1, reference: Any = None
) -> ActorCriticLearner:
    """The actor-critic learner of one rank of ``world`` under ``cfg``, the one way every caller builds it:
    rows packed up to the model's position limit (``model.max_seq_len`` for a model that does not say),
    log-probs at the behaviour temperature (``behaviour_temperature``), this rank's share of the batch."""
    return ActorCriticLearner(
        model,
        head,
        cfg.train,
        pad_id=pad_id,
        max_len=int(getattr(model.config, "max_position_embeddings", None) or cfg.model.max_seq_len),
        temperature=behaviour_temperature(cfg.search),
        rank_batch_size=cfg.train.batch_size // world,
        reference=reference,
        compute_dtype=cfg.model.dtype,
    )
