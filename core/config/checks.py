"""The checks a config's types cannot make alone: every field's bounds (its schema metadata), then the few
rules that tie fields together. Each error names its dotted key."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from arbor.core.config.schema import ArborConfig, DataConfig, ResourcesConfig, SearchConfig, TrainConfig
from arbor.core.errors import ConfigError

# Tasks that can relabel a path by what it reached (``task.hindsight(problem, steps)``, ``train.hindsight``): a
# Countdown path that ends at another number solves the problem with that number as its target.
HINDSIGHT_TASKS = ("countdown",)
MAX_INT = 2**53  # integers past this lose exactness as floats (and no run counts that far)
_BOUNDS = {"gt": (">", lambda v, b: v > b), "ge": (">=", lambda v, b: v >= b)}
_BOUNDS |= {"lt": ("<", lambda v, b: v < b), "le": ("<=", lambda v, b: v <= b)}


def check_bounds(section: Any, prefix: str = "") -> None:
    """Every numeric field of ``section`` (and its subsections) within the bounds its schema field declares;
    a list field's bounds hold for each element."""
    for f in dataclasses.fields(section):
        key, value = f"{prefix}{f.name}", getattr(section, f.name)
        if dataclasses.is_dataclass(value):
            check_bounds(value, key + ".")
            continue
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, float) and not math.isfinite(item):
                raise ConfigError(f"config key '{key}' must be a finite number; got {value}")
            if isinstance(item, int) and not isinstance(item, bool) and abs(item) > MAX_INT:
                raise ConfigError(f"config key '{key}' must be at most 2^53 in size; got {value}")
            for name, bound in f.metadata.items():
                symbol, holds = _BOUNDS[name]
                if isinstance(item, (int, float)) and not holds(item, bound):
                    raise ConfigError(f"config key '{key}' must be {symbol} {bound:g}; got {value}")


def validate(cfg: ArborConfig) -> None:
    """Bounds of every field, then the rules across fields; raises ConfigError naming the key."""
    check_bounds(cfg)
    if cfg.model.hidden_size % cfg.model.num_heads:
        raise ConfigError("config key 'model.hidden_size' must be divisible by 'model.num_heads'")
    cd = cfg.task.countdown
    if cd.min_numbers > cd.max_numbers:
        raise ConfigError("config keys 'task.countdown.min_numbers' <= 'task.countdown.max_numbers' must hold")
    ar = cfg.task.arith
    if ar.min_ops > ar.max_ops:
        raise ConfigError("config keys 'task.arith.min_ops' <= 'task.arith.max_ops' must hold")
    if cfg.task.name in ("gsm8k", "math") and not cfg.task.data.path:
        raise ConfigError(f"task.name={cfg.task.name} needs config key 'task.data.path' (a JSONL file)")
    check_data(cfg.task.data)
    check_search(cfg.search)
    if (cfg.search.leaf_value == "prm" or cfg.prm.reward_lambda > 0) and not cfg.prm.path:
        raise ConfigError(
            "search.leaf_value=prm and prm.reward_lambda > 0 need config key 'prm.path' (a PRM checkpoint)"
        )
    check_train(cfg)
    check_resources(cfg.train, cfg.resources)
    check_run_name(cfg.run.name)


def check_run_name(name: str | None) -> None:
    """A run directory stays inside ``run.root``: its name is one plain path component."""
    if name is not None and (not name or "/" in name or "\\" in name or name.startswith(".")):
        raise ConfigError(
            f"config key 'run.name' must be a plain directory name inside 'run.root' (no '/', '..', or leading "
            f"'.'); got {name!r}"
        )


def check_data(d: DataConfig) -> None:
    if d.template == "few_shot" and d.few_shot < 1:
        raise ConfigError(f"config key 'task.data.few_shot' must be >= 1 with template=few_shot; got {d.few_shot}")


def check_search(s: SearchConfig) -> None:
    if s.beam.width < s.children:
        raise ConfigError(
            f"config key 'search.beam.width' must be >= 'search.children' ({s.children}); got {s.beam.width}"
        )
    if s.max_response_tokens < s.max_step_tokens:
        raise ConfigError(
            "config key 'search.max_response_tokens' is below one step "
            f"('search.max_step_tokens' = {s.max_step_tokens}); got {s.max_response_tokens}"
        )
    if not s.kinds:
        raise ConfigError("config key 'search.kinds' must name at least one of mcts, beam, best_of_n, greedy")


def check_train(cfg: ArborConfig) -> None:
    t, b = cfg.train, cfg.buffer
    if t.journey.mode == "journey" and cfg.task.name != "countdown":
        raise ConfigError(
            f"config key 'train.journey.mode': task {cfg.task.name} has no journey format (countdown has); "
            "use train.journey.mode=shortcut or off"
        )
    if b.solution_replay and t.journey.mode == "off":
        raise ConfigError(
            "config key 'buffer.solution_replay': the archive holds imitated responses, and "
            "train.journey.mode=off makes none; with mode off set buffer.solution_replay=0 too, or keep "
            "train.journey.mode=shortcut (or journey)"
        )
    if not t.policy_coef and t.journey.mode == "off" and not t.visit_coef:
        raise ConfigError(
            "config key 'train.policy_coef': at 0 with train.journey.mode=off and train.visit_coef=0 nothing "
            "trains the policy; keep train.journey.mode=shortcut (expert iteration) or raise train.policy_coef"
        )
    if t.hindsight:
        if cfg.task.name not in HINDSIGHT_TASKS:
            raise ConfigError(
                f"config key 'train.hindsight': task {cfg.task.name} cannot relabel a path by what it reached "
                f"({', '.join(HINDSIGHT_TASKS)} can); set train.hindsight=0"
            )
        if not b.solution_replay:
            raise ConfigError(
                "config key 'train.hindsight': relabelled paths train only from the self-imitation archive, "
                "and buffer.solution_replay is 0; raise buffer.solution_replay or set train.hindsight=0"
            )
    if t.retry_simulations and cfg.search.kind != "mcts":
        raise ConfigError(
            f"config key 'train.retry_simulations': it sets MCTS simulations, and search.kind is "
            f"{cfg.search.kind}; set search.kind=mcts or train.retry_simulations=0"
        )
    if b.min_size_to_sample > b.capacity:
        raise ConfigError(
            f"config key 'buffer.min_size_to_sample' ({b.min_size_to_sample}) exceeds 'buffer.capacity' "
            f"({b.capacity}): the learner could never sample"
        )
    if t.batch_size > b.capacity:
        raise ConfigError(f"config key 'train.batch_size' ({t.batch_size}) exceeds 'buffer.capacity' ({b.capacity})")
    # Before the first sample the rate limiter admits min_size_to_sample + error_buffer / samples_per_insert
    # items: a larger batch never finds enough of them, and the learner waits forever.
    most = b.min_size_to_sample + b.error_buffer / b.samples_per_insert
    if t.batch_size > most:
        raise ConfigError(
            f"config key 'train.batch_size' ({t.batch_size}) exceeds what the buffer admits before the learner's "
            f"first sample, 'buffer.min_size_to_sample' + 'buffer.error_buffer' / 'buffer.samples_per_insert' "
            f"= {most:g}: the learner would wait forever; raise buffer.error_buffer"
        )
    # A learner batch must fit the rate limiter's window (Reverb: 2 * error_buffer), or sampling deadlocks.
    if b.error_buffer < max(1.0, b.samples_per_insert) / 2 or 2 * b.error_buffer < t.batch_size:
        raise ConfigError(
            f"config key 'buffer.error_buffer' ({b.error_buffer}) must be at least half of 'train.batch_size' "
            f"({t.batch_size}): the learner samples a whole batch at once, and the rate limiter's window is "
            "2 x error_buffer wide"
        )


def check_resources(t: TrainConfig, r: ResourcesConfig) -> None:
    if t.engine == "torch" and r.learner_ranks > 1:
        raise ConfigError(
            "config key 'train.engine=torch' trains one rank only (nothing all-reduces its gradients); "
            "use train.engine=deepspeed with 'resources.learner_ranks' > 1"
        )
    if t.mode == "local" and r.learner_ranks > 1:
        raise ConfigError(
            f"train.mode=local trains one learner rank; config key 'resources.learner_ranks' is {r.learner_ranks} "
            "(use train.mode=sync or async for a learner group)"
        )
    if t.batch_size % r.learner_ranks:
        raise ConfigError(
            f"config key 'train.batch_size' ({t.batch_size}) must divide evenly over "
            f"'resources.learner_ranks' ({r.learner_ranks})"
        )
    if r.learner_gpus not in (0, 1) and r.learner_gpus != int(r.learner_gpus):
        raise ConfigError(f"config key 'resources.learner_gpus' must be a whole number of GPUs; got {r.learner_gpus}")
    if r.actor_cpus + r.actor_gpus == 0 or r.learner_cpus + r.learner_gpus == 0 or r.buffer_cpus == 0:
        raise ConfigError(
            "config keys 'resources.actor_cpus/actor_gpus', 'resources.learner_cpus/learner_gpus' and "
            "'resources.buffer_cpus' must reserve something (a placement group bundle cannot be empty)"
        )
