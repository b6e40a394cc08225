"""Which problems serve what: the held-out split and every stretch of training seeds, in one place.

A task's problems are numbered: training problem ``i`` is ``task.train_problem(i)`` for ``i`` in
``[0, EVAL_SEED_OFFSET)``, and the held-out set is drawn from seeds at and above ``EVAL_SEED_OFFSET`` (and
every training draw that equals a held-out problem by content is redrawn, so the two never meet). Each
consumer of training problems reads its own stretch, so no two of them share a problem by accident:

| stretch starts at | who reads it | from index |
|---|---|---|
| ``SFT_SEEDS`` (0) | SFT's stream; the ``sft.num_problems`` demonstration pool (its first problems) | ``sft.seed`` |
| ``VALUE_SEEDS`` (2^30) | ``arbor value``: the OVM value fit's sampled problems | ``value.seed`` |
| ``PRM_SEEDS`` (1.5 x 2^30) | ``arbor prm``: the problems searched for process-reward labels | ``prm.seed`` |
| ``ROLLOUT_SEEDS`` (2^31) | ``arbor train``'s rollouts, interleaved over the actors by cursor | ``train.seed`` |
| ``TRL_SEEDS`` (2.5 x 2^31) | ``bench/vs_trl.py``: TRL's GRPO prompts | |
| ``EVAL_SEED_OFFSET`` (2^40) | the held-out set (``task.eval_seed`` up) | |

Within a stretch a config seed ``s`` starts at ``s x SEED_STRIDE``. Whatever reads problems for learning
(rollouts, the value fit, PRM labels, TRL) skips :func:`problems_to_skip`: the held-out problems and, when
``sft.num_problems`` caps SFT, the demonstration pool, which the warm-started policy has memorised.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from arbor.core.errors import ConfigError

if TYPE_CHECKING:  # types only: the task modules import this one
    from arbor.core.config import ArborConfig
    from arbor.core.tasks.base import Problem, Task

SFT_SEEDS = 0
VALUE_SEEDS = 1 << 30
PRM_SEEDS = 3 << 29
ROLLOUT_SEEDS = 1 << 31
TRL_SEEDS = 5 << 30
EVAL_SEED_OFFSET = 1 << 40
SEED_STRIDE = 1_000_003  # a prime: config seeds s and s + 1 read stretches that do not overlap for a million draws


def stretch_start(stretch: int, seed: int) -> int:
    """The first training index of ``stretch`` (one of the constants above) for config seed ``seed``."""
    return stretch + seed * SEED_STRIDE


def rollout_index(train_seed: int, cursor: int, num_actors: int, actor: int) -> int:
    """The training index of rollout actor ``actor``'s ``cursor``-th problem (of ``num_actors``)."""
    return stretch_start(ROLLOUT_SEEDS, train_seed) + cursor * num_actors + actor


def check_train_index(index: int) -> int:
    """``index`` itself if it is a valid training seed (disjoint from held-out seeds)."""
    if not 0 <= index < EVAL_SEED_OFFSET:
        raise ValueError(f"training problem index must lie in [0, {EVAL_SEED_OFFSET}); got {index}")
    return index


def distinct_problems(
    task: Task, count: int, first_index: int, mix: list[float] | None, exclude_keys: set[str]
) -> list[Problem]:
    """``count`` training problems from ``first_index`` on, distinct by content and outside ``exclude_keys``.

    Distinct by content: two seeds can draw the same problem, and a duplicate would let a fit and its
    held-out report (split by problem) share content. A data task with fewer distinct rows than ``count``
    gives them all.
    """
    out: list[Problem] = []
    taken = set(exclude_keys)
    index = first_index
    misses = 0
    while len(out) < count and misses < 10 * count + 1000:
        problem = task.train_problem(index, mix)
        index += 1
        if problem.key not in taken:
            taken.add(problem.key)
            out.append(problem)
        else:
            misses += 1
    return out


def demonstration_pool(task: Task, size: int, level_mix: list[float] | None = None) -> list[Problem]:
    """The first ``size`` distinct training problems of the SFT stretch: a fixed set of demonstrations.

    ``sft.num_problems`` caps SFT to this pool, as when worked solutions are scarce and prompts are not;
    RL rollouts skip these keys, so the problems they learn from are new to the warm-started policy.
    """
    pool = distinct_problems(task, size, SFT_SEEDS, level_mix, set())
    if len(pool) < size:
        raise ConfigError(
            f"sft.num_problems={size}: the task has only {len(pool)} distinct training problems "
            "(lower sft.num_problems, or set 0 for the whole training stream)"
        )
    return pool


def problems_to_skip(cfg: ArborConfig, task: Task) -> set[str]:
    """Keys no learning side reads: held-out content, and the SFT demonstrations when ``sft.num_problems``
    caps them. An ``sft.num_problems`` larger than the task raises :class:`ConfigError` here."""
    keys = {p.key for p in task.eval_problems()}
    if cfg.sft.num_problems:
        keys |= {p.key for p in demonstration_pool(task, cfg.sft.num_problems, cfg.sft.difficulty_mix)}
    return keys
