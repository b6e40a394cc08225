"""The Ray actor classes: a rollout worker and a learner rank, each built with its Ray-side seams.

Both subclass the plain class they run (``arbor.actors.rollout.RolloutWorker``,
``arbor.learner.rank.LearnerRank``), so every method of those is a remote method here; this module adds
only what needs Ray: the per-process torch threads, the channels over the coordinator, the runtime context
(restarted? which node?) and the group's rendezvous address.
"""

from __future__ import annotations

import socket
from typing import Any

import ray
import torch

from arbor.actors.rollout import RolloutSeams, RolloutWorker
from arbor.core.config import ArborConfig
from arbor.launch.distributed.channels import RayBufferClient, weight_channel
from arbor.launch.distributed.coordinator import CoordinatorReporter
from arbor.learner.advantages import sample_builder
from arbor.learner.rank import LearnerRank

ACTOR_ENV = {  # quiet, offline workers
    "TRANSFORMERS_VERBOSITY": "error",
    "HF_HUB_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "WANDB_SILENT": "true",
    "OMP_NUM_THREADS": "1",
    "PYTHONWARNINGS": "ignore",
}


class RolloutActor(RolloutWorker):
    """``ray.remote(RolloutActor)``: a rollout worker pulling weights through the coordinator and inserting
    into the replay service."""

    def __init__(
        self, cfg: ArborConfig, actor_index: int, num_actors: int, init_path: str, coordinator: Any, service: Any
    ):
        # The run passes the coordinator and the replay service by name, looked up here: an actor handle as a
        # constructor argument is an object-store reference that Ray cannot rebuild when it restarts this
        # actor (ray-project/ray#53727), a name always resolves while the run lives.
        coordinator, service = (ray.get_actor(a) if isinstance(a, str) else a for a in (coordinator, service))
        torch.set_num_threads(cfg.resources.actor_threads)
        context = ray.get_runtime_context()
        name = f"rollout-{actor_index}"
        on_gpu = cfg.resources.actor_gpus > 0 and torch.cuda.is_available()
        seams = RolloutSeams(
            channel=weight_channel(
                cfg.train.weight_sync,
                coordinator,
                learner_on_gpu=cfg.resources.learner_gpus > 0,
                actors_on_gpu=on_gpu,
                name=name,
            ),
            buffer=RayBufferClient(service),
            reporter=CoordinatorReporter(coordinator),
            to_samples=sample_builder(cfg.train),
            restarted=bool(context.was_current_actor_reconstructed),
            node_id=context.get_node_id(),
        )
        super().__init__(cfg, actor_index, num_actors, init_path, seams)

    def ping(self) -> str:
        return self.name


class LearnerActor(LearnerRank):
    """``ray.remote(LearnerActor)``: one learner rank, rank 0 publishing through the coordinator."""

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
        on_gpu = cfg.resources.learner_gpus > 0 and torch.cuda.is_available()
        channel = weight_channel(
            cfg.train.weight_sync,
            coordinator,
            learner_on_gpu=on_gpu,
            actors_on_gpu=cfg.resources.actor_gpus > 0,
            name=f"learner-{rank}",
        )
        super().__init__(cfg, rank, world, init_path, channel, reference_path)

    def address(self) -> tuple[str, int]:
        """This node's IP and a free port: the rendezvous of the group, asked of rank 0."""
        with socket.socket() as s:
            s.bind(("", 0))
            port = s.getsockname()[1]
        return ray.util.get_node_ip_address(), port

    def ping(self) -> dict[str, Any]:
        return {"rank": self.rank, "node_id": ray.get_runtime_context().get_node_id()}
