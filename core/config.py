"""Arbor's one typed config schema (omegaconf structured dataclasses).

Every command is ``arbor <command> CONFIG [key=value ...]``: the YAML recipe is merged onto these
defaults, then the dotted overrides. An unknown key or a value of the wrong type stops the command at
start-up with a :class:`ConfigError` that names the full dotted key.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException, ValidationError

from core.errors import ConfigError


@dataclass
class ModelConfig:
    path: str | None = None  # local HF checkpoint dir to load; None builds the tiny model below from scratch
    arch: str = "llama"  # architecture of the from-scratch model: llama | qwen2
    hidden_size: int = 192  # width of the from-scratch model
    num_layers: int = 4  # transformer blocks
    num_heads: int = 4  # attention heads (key/value heads equal heads)
    intermediate_size: int = 512  # MLP width
    max_seq_len: int = 128  # longest prompt + response in tokens
    init_seed: int = 0  # seed for the from-scratch weights


@dataclass
class CountdownConfig:
    min_numbers: int = 3  # numbers given at difficulty level 0
    max_numbers: int = 4  # numbers given at the hardest level (levels = max - min + 1)
    max_operand: int = 8  # given numbers are drawn from 1..max_operand
    max_target: int = 30  # targets lie in 1..max_target
    min_steps: int = 2  # the shortest solution needs at least this many steps


@dataclass
class ArithConfig:
    min_ops: int = 2  # operators in a chain at difficulty level 0
    max_ops: int = 4  # operators at the hardest level
    max_operand: int = 20  # operands are drawn from 1..max_operand


@dataclass
class DataConfig:
    path: str | None = None  # JSONL file for task.name gsm8k | math
    question_key: str | None = None  # field holding the problem; None: the task's default (question | problem)
    answer_key: str | None = None  # field holding the reference answer; None: the task's default (answer)
    solution_key: str | None = None  # field holding a worked solution, if any; None: the task's default
    eval_fraction: float = 0.1  # share of a single file held out for evaluation when no eval_path is given
    eval_path: str | None = None  # separate JSONL for held-out problems


@dataclass
class TaskConfig:
    name: str = "countdown"  # countdown | arith | gsm8k | math
    countdown: CountdownConfig = field(default_factory=CountdownConfig)
    arith: ArithConfig = field(default_factory=ArithConfig)
    data: DataConfig = field(default_factory=DataConfig)
    eval_size: int = 200  # held-out problems (fixed per config: seeds eval_seed .. eval_seed + eval_size - 1)
    eval_seed: int = 0  # first held-out seed; held-out seeds live in a range disjoint from training seeds
    eval_mix: list[float] | None = None  # weight per difficulty level for held-out problems; None: uniform


@dataclass
class SFTConfig:
    steps: int = 700  # optimizer steps
    batch_size: int = 64  # sequences per step
    lr: float = 3e-3  # peak learning rate (AdamW)
    min_lr_ratio: float = 0.1  # cosine decay ends at lr * min_lr_ratio
    warmup_steps: int = 50  # linear warm-up steps
    weight_decay: float = 0.01  # AdamW weight decay
    grad_clip: float = 1.0  # max gradient norm
    difficulty_mix: list[float] | None = None  # weight per difficulty level of training problems; None: uniform
    corrupt_fraction: float = 0.1  # share of traces with one injected error, so the init is imperfect
    engine: str = "deepspeed"  # deepspeed | torch: which engine runs the update
    zero_stage: int = 0  # DeepSpeed ZeRO stage (0, 1 or 2)
    seed: int = 0  # data order and corruption seed
    eval_before_after: bool = True  # evaluate the init and the trained model and print a before/after table


@dataclass
class EvalConfig:
    batch_size: int = 100  # problems per generation batch
    max_new_tokens: int = 64  # response length limit in tokens
    num_samples: int = 4  # sampled responses per problem for pass@k / maj@k (0 disables sampling)
    temperature: float = 1.0  # sampling temperature for pass@k / maj@k
    top_p: float = 1.0  # nucleus sampling threshold
    ks: list[int] = field(default_factory=lambda: [1, 4])  # k values reported for pass@k and maj@k
    seed: int = 0  # sampling seed


@dataclass
class WandbConfig:
    mode: str = "offline"  # offline | online | disabled
    project: str = "arbor"  # wandb project
    entity: str | None = None  # wandb entity (team or user)
    tags: list[str] = field(default_factory=list)  # run tags


@dataclass
class RunConfig:
    root: str = "runs"  # parent directory of run directories
    name: str | None = None  # run directory name; None: <command>-<timestamp>


@dataclass
class SearchConfig:
    kind: str = "mcts"  # mcts | beam | best_of_n | greedy: how a tree over reasoning steps is grown
    simulations: int = 16  # MCTS simulations per tree (leaf expansions plus terminal revisits)
    children: int = 4  # steps sampled per expansion (MCTS; beam search's M); duplicates merge in MCTS
    beam_width: int = 8  # beam search: candidates per round N; the top N / children are kept and expanded
    num_samples: int = 8  # best-of-N: independent chains per problem
    c_puct: float = 1.5  # PUCT exploration constant (Silver et al. 2017)
    dirichlet_alpha: float = 0.3  # concentration of the Dirichlet noise mixed into the root priors
    dirichlet_eps: float = 0.25  # weight of that noise; 0 disables it (evaluation)
    virtual_loss: float = 1.0  # visits of value 0 added along a selected path while its leaf is pending
    leaves_per_round: int = 4  # MCTS leaves one tree may add to one batched model call
    temperature: float = 1.0  # sampling temperature of the behaviour policy; 0 is greedy
    max_depth: int = 8  # steps per response before a node counts as terminal
    max_step_tokens: int = 48  # tokens per step before it is cut (and counted terminal)
    max_response_tokens: int = 96  # tokens per response (all steps); must allow one full step
    leaf_value: str = "value_head"  # value_head | prm: what values a non-terminal leaf
    terminal_value: str = "verifier"  # verifier (training) | value_head (evaluation: never sees the answer)
    answer_by: str = "visits"  # visits | value | vote | value_vote: how a tree picks its final answer
    trees_in_flight: int = 16  # trees the driver advances together, one batched model call per round
    max_batch_rows: int = 256  # sequences per model call; larger rounds are split
    budgets: list[int] = field(default_factory=list)  # test-time scaling budgets for `arbor eval`; [] skips it
    kinds: list[str] = field(default_factory=lambda: ["greedy", "best_of_n", "beam", "mcts"])  # kinds on the curve
    token_budget: int = 0  # MCTS stops once its tree has generated this many tokens; 0: simulations alone decide
    seed: int = 0  # sampling and Dirichlet-noise seed


@dataclass
class ValueConfig:
    problems: int = 512  # training problems the policy samples on (task.train_problem, held-out content skipped)
    samples_per_problem: int = 8  # sampled responses per problem; each is verified and labels its step prefixes
    temperature: float = 1.0  # sampling temperature of the policy
    difficulty_mix: list[float] | None = None  # weight per difficulty level of the problems; None: uniform
    holdout_fraction: float = 0.2  # share of the problems kept out of the fit to report calibration and AUC
    steps: int = 400  # optimizer steps on the value head (the trunk stays frozen)
    batch_size: int = 256  # labelled step prefixes per step
    lr: float = 1e-2  # peak learning rate (AdamW, cosine decay)
    weight_decay: float = 0.0  # AdamW weight decay on the head's weight
    forward_batch_size: int = 64  # sequences per frozen-trunk forward when reading hidden states
    calibration_bins: int = 10  # equal-width bins of the reliability table and the ECE
    seed: int = 0  # problem stretch, sampling and minibatch order


@dataclass
class ArborConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    task: TaskConfig = field(default_factory=TaskConfig)
    sft: SFTConfig = field(default_factory=SFTConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    wandb: WandbConfig = field(default_factory=WandbConfig)
    run: RunConfig = field(default_factory=RunConfig)
    search: SearchConfig = field(default_factory=SearchConfig)
    value: ValueConfig = field(default_factory=ValueConfig)
    threads: int = 0  # torch intra-op threads; 0 keeps torch's default


def _leaf_keys(node: Any, prefix: str = "") -> list[str]:
    """Dotted paths of every leaf under a nested mapping (the keys a recipe or override sets)."""
    if isinstance(node, (dict, DictConfig)):
        items = node.items_ex(resolve=False) if isinstance(node, DictConfig) else node.items()
        out: list[str] = []
        for k, v in items:
            out += _leaf_keys(v, f"{prefix}.{k}" if prefix else str(k))
        return out
    return [prefix]


def _field_type(key: str) -> str:
    """The declared type of a dotted key, as a reader would write it (``int``, ``Optional[str]``...)."""
    import typing

    cls: Any = ArborConfig
    hint: Any = None
    for part in re.sub(r"\[\d+\]", "", key).split("."):
        hints = typing.get_type_hints(cls)
        if part not in hints:
            return "a valid value"
        hint = hints[part]
        cls = hint
    return getattr(hint, "__name__", None) if isinstance(hint, type) else str(hint).replace("typing.", "")


def _explain(exc: OmegaConfBaseException, source: str, given: Any) -> ConfigError:
    key = str(getattr(exc, "full_key", None) or "")
    if isinstance(exc, ConfigKeyError) or " not in " in str(exc):
        # omegaconf names the first missing segment; report the full dotted key the user wrote
        full = next((k for k in _leaf_keys(given) if k == key or k.startswith(key + ".")), key)
        return ConfigError(f"{source}: unknown config key '{full}'")
    if isinstance(exc, ValidationError):
        detail = str(exc).splitlines()[0]
        return ConfigError(f"{source}: config key '{key}' expects {_field_type(key)}: {detail}")
    return ConfigError(f"{source}: bad value for config key '{key}': {str(exc).splitlines()[0]}")


def _merge(base: DictConfig, other: Any, source: str) -> DictConfig:
    try:
        return OmegaConf.merge(base, other)
    except OmegaConfBaseException as exc:
        raise _explain(exc, source, other) from None


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> ArborConfig:
    """Defaults, then the YAML recipe at ``path``, then ``key=value`` overrides; typed and checked."""
    cfg = OmegaConf.structured(ArborConfig)
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            recipe = OmegaConf.load(path)
        except Exception as exc:  # yaml errors carry line numbers in their text
            raise ConfigError(f"{path}: cannot parse YAML: {exc}") from None
        cfg = _merge(cfg, recipe, str(path))
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"override '{item}' is not of the form key=value")
        key = item.split("=", 1)[0]
        try:
            dot = OmegaConf.from_dotlist([item])
        except OmegaConfBaseException as exc:
            raise ConfigError(f"override '{item}': {str(exc).splitlines()[0]}") from None
        cfg = _merge(cfg, dot, f"override '{key}'")
    try:
        OmegaConf.resolve(cfg)
    except OmegaConfBaseException as exc:
        raise _explain(exc, "config", cfg) from None
    obj = OmegaConf.to_object(cfg)
    assert isinstance(obj, ArborConfig)
    validate(obj)
    return obj


def _choice(key: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"config key '{key}' must be one of {', '.join(allowed)}; got '{value}'")


def _positive(key: str, value: float, *, allow_zero: bool = False) -> None:
    if value < 0 or (value == 0 and not allow_zero):
        raise ConfigError(f"config key '{key}' must be {'>= 0' if allow_zero else '> 0'}; got {value}")


def validate(cfg: ArborConfig) -> None:
    """Checks that types alone cannot express; raises ConfigError naming the key."""
    _choice("model.arch", cfg.model.arch, ("llama", "qwen2"))
    _choice("task.name", cfg.task.name, ("countdown", "arith", "gsm8k", "math"))
    _choice("sft.engine", cfg.sft.engine, ("deepspeed", "torch"))
    _choice("wandb.mode", cfg.wandb.mode, ("offline", "online", "disabled"))
    if cfg.sft.zero_stage not in (0, 1, 2):
        raise ConfigError(f"config key 'sft.zero_stage' must be 0, 1 or 2; got {cfg.sft.zero_stage}")
    if cfg.model.hidden_size % cfg.model.num_heads:
        raise ConfigError("config key 'model.hidden_size' must be divisible by 'model.num_heads'")
    for key in (
        "model.hidden_size",
        "model.num_layers",
        "model.num_heads",
        "model.max_seq_len",
        "sft.batch_size",
        "eval.batch_size",
        "eval.max_new_tokens",
        "task.eval_size",
    ):
        section, name = key.split(".")
        _positive(key, getattr(getattr(cfg, section), name))
    _positive("sft.steps", cfg.sft.steps, allow_zero=True)
    _positive("eval.num_samples", cfg.eval.num_samples, allow_zero=True)
    if not 0.0 <= cfg.sft.corrupt_fraction <= 1.0:
        raise ConfigError(f"config key 'sft.corrupt_fraction' must lie in [0, 1]; got {cfg.sft.corrupt_fraction}")
    if any(k < 1 for k in cfg.eval.ks):
        raise ConfigError(f"config key 'eval.ks' must hold k >= 1; got {cfg.eval.ks}")
    cd = cfg.task.countdown
    if not 2 <= cd.min_numbers <= cd.max_numbers <= 6:
        raise ConfigError("config keys 'task.countdown.min_numbers' <= 'task.countdown.max_numbers' must lie in 2..6")
    ar = cfg.task.arith
    if not 1 <= ar.min_ops <= ar.max_ops:
        raise ConfigError("config keys 'task.arith.min_ops' <= 'task.arith.max_ops' must be >= 1")
    if cfg.task.name in ("gsm8k", "math") and not cfg.task.data.path:
        raise ConfigError(f"task.name={cfg.task.name} needs config key 'task.data.path' (a JSONL file)")
    validate_search(cfg.search)
    validate_value(cfg.value)


def validate_search(s: SearchConfig) -> None:
    """Checks on the ``search`` section; each error names its dotted key."""
    _choice("search.kind", s.kind, ("mcts", "beam", "best_of_n", "greedy"))
    _choice("search.leaf_value", s.leaf_value, ("value_head", "prm"))
    _choice("search.terminal_value", s.terminal_value, ("verifier", "value_head"))
    _choice("search.answer_by", s.answer_by, ("visits", "value", "vote", "value_vote"))
    for name in (
        "simulations",
        "children",
        "beam_width",
        "num_samples",
        "c_puct",
        "dirichlet_alpha",
        "leaves_per_round",
        "max_depth",
        "max_step_tokens",
        "max_response_tokens",
        "trees_in_flight",
        "max_batch_rows",
    ):
        _positive(f"search.{name}", getattr(s, name))
    _positive("search.virtual_loss", s.virtual_loss, allow_zero=True)
    _positive("search.token_budget", s.token_budget, allow_zero=True)
    _positive("search.temperature", s.temperature, allow_zero=True)
    if not 0.0 <= s.dirichlet_eps <= 1.0:
        raise ConfigError(f"config key 'search.dirichlet_eps' must lie in [0, 1]; got {s.dirichlet_eps}")
    if s.beam_width < s.children:
        raise ConfigError(
            f"config key 'search.beam_width' must be >= 'search.children' ({s.children}); got {s.beam_width}"
        )
    if s.max_response_tokens < s.max_step_tokens:
        raise ConfigError(
            "config key 'search.max_response_tokens' is below one step "
            f"('search.max_step_tokens' = {s.max_step_tokens}); got {s.max_response_tokens}"
        )
    if not s.kinds:
        raise ConfigError("config key 'search.kinds' must name at least one of mcts, beam, best_of_n, greedy")
    for kind in s.kinds:
        _choice("search.kinds", kind, ("mcts", "beam", "best_of_n", "greedy"))
    if any(b < 1 for b in s.budgets):
        raise ConfigError(f"config key 'search.budgets' must hold budgets >= 1 (one step at least); got {s.budgets}")


def validate_value(v: ValueConfig) -> None:
    """Checks on the ``value`` section; each error names its dotted key."""
    for name in ("problems", "samples_per_problem", "steps", "batch_size", "lr", "forward_batch_size"):
        _positive(f"value.{name}", getattr(v, name))
    _positive("value.temperature", v.temperature, allow_zero=True)
    _positive("value.weight_decay", v.weight_decay, allow_zero=True)
    if v.calibration_bins < 1:
        raise ConfigError(f"config key 'value.calibration_bins' must be >= 1; got {v.calibration_bins}")
    if not 0.0 < v.holdout_fraction < 1.0:
        raise ConfigError(f"config key 'value.holdout_fraction' must lie in (0, 1); got {v.holdout_fraction}")
    if v.problems < 2:
        raise ConfigError(f"config key 'value.problems' must be >= 2 (some to fit, some held out); got {v.problems}")


def to_yaml(cfg: ArborConfig) -> str:
    """The resolved config as YAML, as written into every run directory."""
    return OmegaConf.to_yaml(OmegaConf.structured(cfg))
