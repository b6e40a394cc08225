"""The rollout actor: tree search on its shard of training problems, finished trees streamed to the buffer.

Loop (``run``): keep ``search.trees_in_flight`` problems of this actor's seeded shard in flight, run the
configured search with one batched model call per round, and as each tree finishes turn it into step
samples, insert them at once (blocking while the buffer applies backpressure) and start the next problem
in its place. Before every round (``between_rounds``) it polls the weight channel with its current version
and loads newer weights (the backend drops its KV cache), so a long search picks up updates and a busy
actor never misses one.

Only finished trees are inserted, as one all-or-nothing insert; a tree cut short by a crash or a stop
request never reaches the buffer. Each tree is named ``ACTOR/CURSOR`` and announced to the buffer before
it is searched, so the buffer's ledger accounts for every tree: inserted once (possibly empty), or
discarded in flight. A restarted actor pulls the current weights in ``__init__``, before
it searches anything, and resumes its shard at the cursor the buffer kept.

The worker imports no Ray and no learner code: its weight channel, buffer client, reporter and the
function that turns a tree into learner samples come in as :class:`RolloutSeams`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from arbor.actors.hindsight import hindsight_samples
from arbor.actors.journey import best_leaf, trace_samples
from arbor.actors.search import (
    HFStepBackend,
    ProcessRewards,
    run_searches,
    training_scorers,
)
from arbor.core.channels import BufferClient, Reporter, WeightChannel, split_published
from arbor.core.config import ArborConfig, SearchConfig
from arbor.core.model import build_policy, value_head_for
from arbor.core.samples import StepSample
from arbor.core.tasks import Problem, build_task
from arbor.core.tasks.split import problems_to_skip, rollout_index
from arbor.core.tree import SearchTree, search_stats
from arbor.reward import verifier_counts


def round_seed(train_seed: int, actor_index: int, cursor: int, restarted: bool) -> int:
    """The token sampler's seed for the search round that starts at ``cursor`` in an actor's shard.

    It depends only on what a checkpoint keeps (the seed and the actors' cursors), so a resumed run carries
    on the random stream where it stopped instead of replaying the draws its first rounds made. (The
    search's own draws, MCTS noise, are already seeded per problem.) A process that Ray restarted mid-run
    redraws the round it repeats with a different stream.
    """
    key = f"rollout/{train_seed}/{actor_index}/{cursor}/{int(restarted)}".encode()
    return int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "little") >> 1


SKIP_LIMIT = 10_000  # solved problems train.skip_solved passes over in a row before it searches one again


class StopSearch(Exception):
    """Raised out of a search when the run stops; unfinished trees are abandoned, never inserted."""


SampleBuilder = Callable[[SearchTree, list[float] | None], list[StepSample]]  # (tree, step rewards) -> samples


@dataclass(frozen=True)
class RolloutSeams:
    """Where a rollout worker's weights come from and its trees go (built by whoever runs it: the Ray actor
    wrapper, or the local runtime)."""

    channel: WeightChannel  # pull with version
    buffer: BufferClient  # whole-tree inserts, and the cursors a restart resumes from
    reporter: Reporter  # running totals and events
    to_samples: SampleBuilder  # a finished tree (and its process rewards) as learner samples
    restarted: bool = False  # this process replaces one that died (Ray restarted the actor)
    node_id: str = ""  # the node it runs on, for the placement report


class RolloutWorker:
    """One rollout actor's state and loop; plain Python, driven in-process or wrapped as a Ray actor."""

    def __init__(self, cfg: ArborConfig, actor_index: int, num_actors: int, init_path: str, seams: RolloutSeams):
        self.cfg = cfg
        self.name = f"rollout-{actor_index}"
        self.index, self.num_actors = actor_index, num_actors
        self.channel, self.buffer, self.reporter = seams.channel, seams.buffer, seams.reporter
        self.to_samples = seams.to_samples
        self.restarted, self.node_id = seams.restarted, seams.node_id
        device = "cuda" if cfg.resources.actor_gpus > 0 and torch.cuda.is_available() else "cpu"
        model, tokenizer = build_policy(dataclasses.replace(cfg.model, path=init_path))
        head = value_head_for(model, init_path)
        model.to(device)
        head.to(device)
        self.backend = HFStepBackend.configured(
            model,
            tokenizer,
            head,
            cfg,
            policy_version=-1,
            seed=round_seed(cfg.train.seed, actor_index, -1, self.restarted),  # each round reseeds it (run)
        )
        # the learner's position limit (learner.rank), which a journey trace must fit after its prompt
        self.max_len = int(getattr(model.config, "max_position_embeddings", None) or cfg.model.max_seq_len)
        self.task = build_task(cfg.task, tokenizer)  # the tokenizer: task.data.template=chat
        self.process = ProcessRewards(cfg)  # the PRM as leaf evaluator and dense step reward, when configured
        self.skip_keys = problems_to_skip(cfg, self.task)
        # The buffer records each actor's cursor with every insert it accepts, so a restarted actor resumes
        # right after the last tree the buffer actually took.
        self.cursor = self.buffer.cursors().get(self.name, 0)
        self.stop = False
        self.solved: set[str] = set()  # problem keys this actor's trees solved (train.skip_solved)
        self.failed: set[str] = set()  # ... and those whose last tree did not (train.retry_simulations)
        self.relabelled: set[str] = set()  # problem keys this actor relabelled a path into (train.hindsight)
        self.totals: dict[str, float] = {
            "trees": 0,
            "skipped_solved": 0,
            "retries": 0,
            "empty_trees": 0,
            "verifier_crashed": 0,
            "samples": 0,
            "tokens_generated": 0,
            "tokens_forwarded": 0,
            "correct_leaves": 0,
            "traces": 0,
            "trace_samples": 0,
            "hindsight_samples": 0,
            "leaves": 0,
            "weight_pulls": 0,
            "pull_seconds": 0.0,
            "insert_seconds": 0.0,
            "search_seconds": 0.0,
        }
        self.pull()  # the current weights before any search, also after a restart
        self.first_version = self.backend.policy_version
        if self.restarted:
            self.reporter.event("actor_restarted", actor=self.name, version=self.first_version)

    # ---- weights ------------------------------------------------------------------------------

    def pull(self) -> None:
        """Poll the channel with our version; load newer weights (dropping stale KV caches); note a stop."""
        t0 = time.perf_counter()
        poll = self.channel.poll(self.backend.policy_version)
        self.stop = poll.stop
        if poll.state is not None:
            model_state, head_state = split_published(poll.state)
            self.backend.load_weights(poll.version, model_state, head_state or None)
            self.totals["weight_pulls"] += 1
            self.totals["pull_seconds"] += time.perf_counter() - t0

    def _pull_between_rounds(self) -> None:
        """``pull`` inside a search: a stop request raises :class:`StopSearch`, abandoning unfinished trees."""
        self.pull()
        if self.stop:
            raise StopSearch

    # ---- problems -----------------------------------------------------------------------------

    def problem_at(self, cursor: int) -> Problem | None:
        """The cursor-th problem of this actor's shard (None where it is held out or an SFT demonstration)."""
        problem = self.task.train_problem(rollout_index(self.cfg.train.seed, cursor, self.num_actors, self.index))
        if problem.key in self.skip_keys:
            return None
        every = self.cfg.debug.poison_problem_every
        if every and cursor % every == every - 1:  # fault injection (bench/faults.py): a malformed data row
            problem = dataclasses.replace(problem, reference={})
        return problem

    def next_problem(self) -> tuple[int, Problem]:
        """The next searchable problem of the shard and its cursor; the cursor moves past it. With
        ``train.skip_solved`` a problem this actor has solved is passed over (unless every one of the next
        ``SKIP_LIMIT`` is solved: then the space is spent and it searches again)."""
        passed = 0
        while True:
            problem = self.problem_at(self.cursor)
            self.cursor += 1
            if problem is None:
                continue
            if self.cfg.train.skip_solved and problem.key in self.solved and passed < SKIP_LIMIT:
                passed += 1
                self.totals["skipped_solved"] += 1
                continue
            return self.cursor - 1, problem

    def search_cfg_for(self, problem: Problem) -> SearchConfig:
        """The search settings of one problem: ``train.retry_simulations`` for one whose tree failed here."""
        retry = self.cfg.train.retry_simulations
        if not retry or problem.key not in self.failed:
            return self.cfg.search
        self.totals["retries"] += 1
        return dataclasses.replace(self.cfg.search, mcts=dataclasses.replace(self.cfg.search.mcts, simulations=retry))

    def _remember(self, problem: Problem, tree: SearchTree) -> None:
        if best_leaf(tree) is not None:  # solved: a right leaf, the one the archive imitates
            self.solved.add(problem.key)
            self.failed.discard(problem.key)
        else:
            self.failed.add(problem.key)

    # ---- the loop -----------------------------------------------------------------------------

    def run(self, max_trees: int = 0) -> dict[str, Any]:
        """Search and stream trees until stopped (or ``max_trees`` trees, for sync mode); returns totals.

        The shard goes to the search as one lazy stream: each problem's tree is announced to the buffer as
        it is taken, and a finished tree's place goes to the next problem at once, so every model call
        stays ``search.trees_in_flight`` trees wide (a round of fixed batches waited for its longest tree,
        with the call narrowing as the others ended)."""
        self.pull()  # sync rounds start from the weights the last round published
        if self.stop:
            return self.report()
        taken: dict[int, tuple[int, Problem]] = {}  # stream index -> (cursor, problem), while in flight

        def shard():
            for i in itertools.count():
                if self.stop or (max_trees > 0 and i >= max_trees):
                    return
                cursor, problem = self.next_problem()
                self.buffer.begin([self.tree_id(cursor)])
                taken[i] = (cursor, problem)
                yield problem

        def on_finished(i: int, tree: SearchTree) -> None:
            cursor, problem = taken.pop(i)
            self._emit(tree, cursor, problem)
            self._remember(problem, tree)

        self.backend.reseed(round_seed(self.cfg.train.seed, self.index, self.cursor, self.restarted))
        t0 = time.perf_counter()
        try:
            run_searches(
                self.backend,
                shard(),
                self.cfg.search,
                self.process.scorers_for(training_scorers),
                between_rounds=self._pull_between_rounds if max_trees <= 0 else None,
                on_finished=on_finished,
                collect=False,
                cfg_for=self.search_cfg_for,
            )
        except StopSearch:
            pass
        self.totals["search_seconds"] += time.perf_counter() - t0
        return self.report()

    def tree_id(self, cursor: int) -> str:
        """The id of the tree searched for the cursor-th problem of this actor's shard: unique in the run."""
        return f"{self.name}/{cursor}"

    def _emit(self, tree: SearchTree, cursor: int, problem: Problem) -> None:
        """Stream one finished tree's samples into the buffer (blocking under backpressure), then report. A
        tree with no samples (no response got a verdict) is inserted too, so the ledger closes its entry.
        With ``train.journey`` its trace's samples go in with it, as part of the same tree."""
        samples = self.to_samples(tree, self.process.step_rewards(tree))
        traces = trace_samples(tree, problem, self.cfg, self.backend.tokenizer, self.max_len)
        self.totals["trace_samples"] += len(traces)
        self.totals["traces"] += bool(traces)
        samples += traces
        tree_id = self.tree_id(cursor)
        samples = [dataclasses.replace(s, meta={**s.meta, "tree": tree_id, "tree_size": len(samples)}) for s in samples]
        relabelled = hindsight_samples(
            tree,
            problem,
            self.task,
            limit=self.cfg.train.hindsight,
            skip_keys=self.skip_keys,
            seen=self.relabelled,
            encode=self.backend.encode,
            tokenizer=self.backend.tokenizer,
            max_response_tokens=self.cfg.search.max_response_tokens,
            max_len=self.max_len,
        )
        self.totals["hindsight_samples"] += len(relabelled)
        t0 = time.perf_counter()
        # the relabelled samples go with the tree's insert to the solution archive alone (ARCHIVE_ONLY_SOURCES)
        if not self.buffer.insert(samples + relabelled, cursor=(self.name, cursor + 1), tree=tree_id):
            raise StopSearch  # the buffer closed (shutdown): the tree is not taken, the cursor stays
        self.totals["insert_seconds"] += time.perf_counter() - t0
        leaves = [n for n in tree.terminals() if n.outcome is not None]
        t = self.totals
        t["trees"] += 1
        t["empty_trees"] += not samples
        t["verifier_crashed"] = verifier_counts()["crashed"]  # this process's, like every total here
        t["samples"] += len(samples)
        t["tokens_generated"] += tree.tokens_generated
        t["tokens_forwarded"] += tree.tokens_forwarded
        t["leaves"] += len(leaves)
        t["correct_leaves"] += sum(n.outcome for n in leaves)
        stats = search_stats([tree])
        for k, v in stats.items():
            t[k + "_sum"] = t.get(k + "_sum", 0.0) + v
        share = self.cfg.train.tree_every > 0 and int(t["trees"]) % 25 == 1
        self.reporter.report(self.name, self.report(), tree.to_json() if share else None)

    def report(self) -> dict[str, Any]:
        return dict(self.totals) | {
            "version": self.backend.policy_version,
            "first_version": self.first_version,
            "restarted": self.restarted,
            "cursor": self.cursor,
            "node_id": self.node_id,
        }
