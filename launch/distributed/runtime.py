"""The training loop's runtime on Ray (``train.mode=async`` and ``sync``): one placement group holding N
rollout actors, the replay service and the coordinator, and W learner ranks in one torch.distributed group.

A killed rollout actor is restarted by Ray (``resources.max_actor_restarts``), pulls the current weights
before it searches again and resumes its shard where the buffer's cursor says. The learner ranks are
driven in lock step: each step hands every rank the same batch (one object in the store).
"""

from __future__ import annotations

import logging
import math
import shutil
import tempfile
from pathlib import Path
from typing import Any

import ray

from arbor.core.config import ArborConfig
from arbor.core.errors import RunFailed
from arbor.core.samples import StepSample
from arbor.launch.checkpoints import REPLAY_FILE
from arbor.launch.distributed.actors import ACTOR_ENV, LearnerActor, RolloutActor
from arbor.launch.distributed.coordinator import Coordinator
from arbor.launch.distributed.placement import Placement, check_resources, start_ray
from arbor.launch.distributed.replay_service import ReplayService
from arbor.launch.runtime import ActorsReport, Runtime, replay_buffer_kwargs
from arbor.learner.rank import LearnerStep

log = logging.getLogger(__name__)


class RayRuntime(Runtime):
    """Rollout actors, replay service, coordinator and learner ranks as Ray actors."""

    def __init__(self, cfg: ArborConfig):
        """Start or join Ray and check the cluster can hold the run (nothing is placed yet)."""
        self.cfg = cfg
        self.started_ray = start_ray(cfg)
        self.place: Placement | None = None
        self.coordinator: Any = None
        self.service: Any = None
        self.ranks: list[Any] = []
        self.rollouts: list[Any] = []
        self.run_refs: list[ray.ObjectRef] = []  # async mode: each actor's free-running search
        self.learner_nodes: list[str] = []
        self.store_dir: str | None = None  # the learner group's file rendezvous, when Ray started here
        try:
            check_resources(cfg)
        except BaseException:
            self.close()
            raise

    def start(self, name: str, init_path: str, resume: Path | None, version: int, reference_path: str | None) -> None:
        cfg, r = self.cfg, self.cfg.resources
        self.place = place = Placement(cfg, f"arbor-{name}")
        env = {"env_vars": dict(ACTOR_ENV)}  # merged into the job's runtime_env, which stays in force
        names = {"coordinator": f"{name}/coordinator", "service": f"{name}/replay"}  # rollout actors look them up
        self.coordinator = (
            ray.remote(Coordinator)
            .options(num_cpus=0, scheduling_strategy=place.buffer(), name=names["coordinator"])
            .remote()
        )
        buffer_args = {"restore_path": str(resume / REPLAY_FILE)} if resume else replay_buffer_kwargs(cfg)
        self.service = (
            ray.remote(ReplayService)
            .options(num_cpus=r.buffer_cpus, scheduling_strategy=place.buffer(), runtime_env=env, name=names["service"])
            .remote(**buffer_args)
        )
        rank_cls = ray.remote(LearnerActor)
        self.ranks = [
            rank_cls.options(
                num_cpus=r.learner_cpus, num_gpus=r.learner_gpus, scheduling_strategy=place.rank(i), runtime_env=env
            ).remote(cfg, i, r.learner_ranks, init_path, self.coordinator, reference_path)
            for i in range(r.learner_ranks)
        ]
        addr, port = ray.get(self.ranks[0].address.remote())
        store = None
        if self.started_ray and r.learner_ranks > 1:  # one machine: a file rendezvous, no listening TCP store
            self.store_dir = tempfile.mkdtemp(prefix="arbor-group-")
            store = str(Path(self.store_dir) / "store")
        ray.get([rk.setup.remote(addr, port, version, store) for rk in self.ranks])
        if resume:
            versions = ray.get([rk.load.remote(str(resume)) for rk in self.ranks])
            if set(versions) != {version}:
                raise RuntimeError(f"{resume}: the ranks restored versions {versions}, the run state says {version}")
        ray.get(self.ranks[0].publish.remote())  # version `version`, before any actor searches
        actor_cls = ray.remote(RolloutActor)
        # Constructor arguments go inline (the config and a path are a few kB; the coordinator and the service
        # by name), never as object-store references, which Ray cannot rebuild when it restarts an actor.
        self.rollouts = [
            actor_cls.options(
                num_cpus=r.actor_cpus,
                num_gpus=r.actor_gpus,
                max_restarts=r.max_actor_restarts,
                max_task_retries=-1 if r.max_actor_restarts else 0,
                scheduling_strategy=place.actor(i),
                runtime_env=env,
                name=f"{name}/rollout-{i}",
            ).remote(cfg, i, r.rollout_actors, init_path, names["coordinator"], names["service"])
            for i in range(r.rollout_actors)
        ]
        ray.get([a.ping.remote() for a in self.rollouts])
        self.learner_nodes = [p["node_id"] for p in ray.get([rk.ping.remote() for rk in self.ranks])]

    def insert_demonstrations(self, samples: list[StepSample]) -> None:
        ray.get(self.service.insert.remote(samples, True))

    def stream(self) -> None:
        self.run_refs = [a.run.remote() for a in self.rollouts]

    def search_round(self, trees: int) -> None:
        per_actor = max(1, math.ceil(trees / len(self.rollouts)))
        ray.get([a.run.remote(max_trees=per_actor) for a in self.rollouts])

    def sample(self, n: int, version: int, timeout_s: float) -> ray.ObjectRef:
        return self.service.sample.remote(n, version, timeout_s)  # resolved by each rank, not here

    def learn(self, batch: ray.ObjectRef, publish: bool | None = None) -> LearnerStep | None:
        refs = [rk.step.remote(batch, publish) for rk in self.ranks]
        try:
            return ray.get(refs)[0]
        except (ray.exceptions.RayActorError, ray.exceptions.OutOfMemoryError) as exc:  # killed, OOM, node lost
            dead = next((i for i, ref in enumerate(refs) if _died(ref)), "?")
            cause = str(exc).strip().splitlines()[0]
            if isinstance(exc, ray.exceptions.OutOfMemoryError):
                cause += "; a smaller train.batch_size or shorter search.max_response_tokens needs less"
            raise RunFailed(f"learner rank {dead} died during a learner step ({cause})") from None

    def check_rollouts(self) -> None:
        """Surface rollout actors that died for good (restarts exhausted); stop if none is left."""
        if not self.run_refs:
            return
        done, _ = ray.wait(self.run_refs, num_returns=len(self.run_refs), timeout=0)
        failed = []
        for ref in done:
            try:
                ray.get(ref)
            except Exception as exc:  # noqa: BLE001 - an actor's death arrives as any Ray error
                failed.append(failure_line(exc))
        if failed and len(done) == len(self.run_refs):
            raise RunFailed(f"every rollout actor has stopped; the first failure: {failed[0]}")

    def buffer_stats(self) -> dict[str, Any]:
        return ray.get(self.service.stats.remote())

    def actors(self) -> ActorsReport:
        board = ray.get(self.coordinator.snapshot.remote())
        return ActorsReport(board.stats, board.events)

    def latest_tree(self) -> dict | None:
        return ray.get(self.coordinator.latest_tree.remote())

    def save(self, path: Path, meta: dict[str, Any]) -> dict[str, int]:
        ray.get([rk.save.remote(str(path), meta) for rk in self.ranks])
        return ray.get(self.service.snapshot.remote(str(path / REPLAY_FILE)))

    def with_policy(self, fn, *args: Any) -> Any:
        return ray.get(self.ranks[0].with_policy.remote(fn, *args))

    def stop_rollouts(self) -> None:
        ray.get(self.coordinator.request_stop.remote())
        ray.get(self.service.close.remote())  # unblocks actors waiting to insert; their trees are not taken
        if self.run_refs:
            ray.wait(self.run_refs, num_returns=len(self.run_refs), timeout=60)

    @property
    def placement(self) -> dict[str, Any]:
        stats = self.actors().stats if self.coordinator is not None else {}
        return {"learner": list(self.learner_nodes), "actors": [s.get("node_id") for s in stats.values()]}

    def close(self) -> None:
        try:  # let rank 0 release its weight server's pairs before the processes go
            ray.get([rk.close.remote() for rk in self.ranks], timeout=30)
        except Exception as exc:  # a rank that already died has nothing to release
            log.debug("closing learner ranks: %r", exc)
        for handle in self.rollouts + self.ranks + [h for h in (self.service, self.coordinator) if h is not None]:
            ray.kill(handle)
        self.rollouts, self.ranks, self.service, self.coordinator = [], [], None, None
        if self.place is not None:
            self.place.remove()
            self.place = None
        if self.started_ray:
            self.started_ray = False
            ray.shutdown()
        if self.store_dir:
            shutil.rmtree(self.store_dir, ignore_errors=True)
            self.store_dir = None


def _died(ref: ray.ObjectRef) -> bool:
    """Whether the task behind ``ref`` failed because its actor died."""
    try:
        ray.get(ref, timeout=0)
    except (ray.exceptions.RayActorError, ray.exceptions.OutOfMemoryError):
        return True
    except Exception:  # noqa: BLE001 - finished some other way, or still running
        return False
    return False


def failure_line(exc: BaseException) -> str:
    """An actor's failure in one line: what died, and the exception it died of (a Ray task error's last line
    is the error itself; its first names the actor)."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    if not lines:
        return type(exc).__name__
    return lines[0] if len(lines) == 1 else f"{lines[0]} ... {lines[-1]}"
