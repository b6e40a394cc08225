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

from arbor.core.errors import ConfigError


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
    eval_fraction: float = 0.1  # share of a single file held out for evaluation when no eval_path is given (1: all)
    eval_path: str | None = None  # separate JSONL for held-out problems
    template: str = "plain"  # prompt: plain (question + newline) | few_shot (worked examples first) | chat (model's)
    few_shot: int = 4  # worked examples of a few_shot prompt: the first rows of path, kept out of training and eval
    steps: str = "line"  # what one step is, in gold traces and in search: line (ends at "\n") | paragraph ("\n\n")
    tokenizer: str | None = None  # directory whose chat template wraps prompts (template=chat); None: the policy's


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
    num_problems: int = 0  # distinct problems SFT demonstrates, a fixed pool RL never draws; 0: the whole stream
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
    responses: str | None = None  # JSONL of given responses to score instead of generating (by uid, question or prompt)
    response_key: str = "response"  # field of eval.responses holding the response text


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
    kind: str = "mcts"  # mcts | beam | best_of_n | greedy | shepherd (best-of-N + completions from every step)
    simulations: int = 16  # MCTS simulations per tree (leaf expansions plus terminal revisits)
    children: int = 4  # steps per expansion (MCTS, merging duplicates; beam's M); shepherd: completions per step
    beam_width: int = 8  # beam search: candidates per round N; the top N / children are kept and expanded
    num_samples: int = 8  # best-of-N (and shepherd's first chains): independent chains per problem
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
class PRMConfig:
    path: str | None = None  # PRM checkpoint (`arbor prm` output) for search.leaf_value=prm and dense step rewards
    kind: str = "explicit"  # explicit: a head on a trunk, fit on step labels | implicit: PRIME's log-ratio PRM
    base: str | None = None  # trunk under the PRM head: None, the policy (model.path); else a separate model
    trees: str | None = None  # JSONL of saved search trees to label; None: search prm.problems training problems first
    problems: int = 256  # training problems searched (with the search section) when prm.trees is unset
    label: str = "soft"  # Math-Shepherd step label: soft (share of completions below that are correct) | hard (any)
    loss: str = "regression"  # regression (cross-entropy toward the labels) | pairwise (Bradley-Terry, sibling pairs)
    min_completions: int = 1  # label a step only with at least this many scored completions below it
    holdout_fraction: float = 0.2  # share of the problems (trees) kept out of the fit for the held-out report
    steps: int = 400  # optimizer steps on the head (the trunk stays frozen)
    batch_size: int = 256  # labelled steps (regression) or pairs (pairwise) per step
    lr: float = 1e-2  # peak learning rate (AdamW, cosine decay)
    weight_decay: float = 0.0  # AdamW weight decay on the head's weight
    forward_batch_size: int = 64  # sequences per frozen-trunk forward
    beta: float = 0.05  # implicit PRM: r_t = beta x log(pi_prm / pi_ref) of each response token (PRIME's 0.05)
    implicit_lr: float = 1e-4  # implicit PRM: learning rate of the whole model copy (AdamW)
    online: bool = False  # implicit PRM in training: update it on every finished tree's verified responses (PRIME)
    reward_lambda: float = 0.0  # dense reward: a step earns lambda x its step score on top of the outcome (0: off)
    step_score: str = "progress"  # progress: PRM(after) - PRM(before), sums to a constant per path | value: PRM(after)
    seed: int = 0  # problems, search and minibatch order


@dataclass
class TrainConfig:
    mode: str = "async"  # async: actors, learner concurrent | sync: search a round, train on it | local: sync, no Ray
    init: str = (
        "sft"  # sft: run the sft section first (on model.path or the from-scratch model) | model: start from model.path
    )
    steps: int = 300  # learner steps budget
    max_wall_s: float = 0.0  # also stop after this many seconds of RL (0: steps alone decide)
    snapshot_every_s: float = 0.0  # save the policy (HF format) to snapshots/t-SECONDS every this many RL seconds
    batch_size: int = 64  # step samples per learner step, over all ranks
    lr: float = 3e-4  # peak learning rate (AdamW)
    min_lr_ratio: float = 1.0  # cosine decay ends at lr * min_lr_ratio (1: constant after warm-up)
    warmup_steps: int = 10  # linear warm-up steps
    weight_decay: float = 0.0  # AdamW weight decay
    grad_clip: float = 1.0  # max gradient norm
    policy_loss: str = "decoupled_ppo"  # decoupled_ppo | ppo | vtrace
    clip_eps: float = 0.2  # PPO clip range around the proximal policy
    is_cap: float = 5.0  # cap on the behaviour importance weight pi_prox / pi_behav
    is_mode: str = "cap"  # cap: truncate the behaviour weight at is_cap | mask: drop tokens above it
    value_coef: float = 0.5  # weight of the value loss
    entropy_coef: float = 0.0  # weight of the entropy bonus
    kl_coef: float = 0.0  # weight of the k3 KL to the frozen init policy (0: no reference model is kept)
    value_trunk_grad: bool = False  # let the value loss train the shared trunk too (False: the head only)
    global_advantage: float = 0.0  # adds this times V(child) - V(root) to each step's V(child) - V(parent) (TreeRL)
    negative_advantage_scale: float = (
        1.0  # multiplies negative advantages (0: learn from better-than-baseline steps only)
    )
    advantage_scale: str = "none"  # none | tree_std: divide a tree's advantages by the std of its leaf outcomes (GRPO)
    value_head_weight: float = 0.0  # mix of the value head into the tree's Monte-Carlo V for advantages
    sync_every: int = 1  # learner steps between weight publications (each publication is a new policy version)
    weight_sync: str = "object_store"  # object_store: one ray.put | collective: torch.distributed (nccl on GPUs)
    max_policy_lag: int = 8  # items more than this many versions behind the learner are evicted, never trained on
    buffer_capacity: int = 4096  # replay buffer items
    sampler: str = "fifo"  # fifo (each item trained on once) | prioritized (|advantage|, with replacement)
    samples_per_insert: float = 1.0  # Reverb SampleToInsertRatio: learner samples per inserted item
    min_size_to_sample: int = 64  # the learner waits until the buffer holds this many items
    error_buffer: float = 128.0  # slack of the rate limiter around the ratio, in samples
    sync_trees_per_round: int = 32  # sync mode: trees searched (over all actors) before each round of training
    demonstrations: str | None = None  # JSONL of {prompt, response} traces inserted as off-policy demonstrations
    eval_every: int = 100  # held-out greedy evaluation every this many learner steps (0: only before and after)
    eval_search_simulations: int = 8  # MCTS simulations for the final "with search" evaluation (0 skips it)
    checkpoint_every: int = 100  # checkpoint every this many learner steps (0: only at the end)
    log_every: int = 5  # learner steps between metric rows
    tree_every: int = 50  # learner steps between rendered sample trees (run dir and wandb)
    engine: str = "deepspeed"  # deepspeed | torch
    zero_stage: int = 0  # DeepSpeed ZeRO stage (0, 1 or 2)
    seed: int = 0  # problem shards, sampling and minibatch seed


@dataclass
class ResourcesConfig:
    address: str | None = None  # Ray cluster to join; None: $RAY_ADDRESS if set (ray job submit), else start Ray here
    rollout_actors: int = 1  # RolloutActors (tree search)
    actor_cpus: float = 1.0  # CPUs per rollout actor
    actor_gpus: float = 0.0  # GPUs per rollout actor (fractions share one inference GPU)
    learner_ranks: int = 1  # learner ranks (one torch.distributed group: gloo on CPU, nccl on GPU)
    learner_cpus: float = 1.0  # CPUs per learner rank
    learner_gpus: float = 0.0  # GPUs per learner rank (0 or whole GPUs)
    buffer_cpus: float = 0.1  # CPUs reserved for the replay buffer actor
    actor_resources: dict[str, float] = field(default_factory=dict)  # custom node resources each actor needs
    learner_resources: dict[str, float] = field(default_factory=dict)  # custom node resources each rank needs
    strategy: str = "PACK"  # placement group strategy: PACK | SPREAD | STRICT_PACK | STRICT_SPREAD
    actor_threads: int = 1  # torch threads per rollout actor
    learner_threads: int = 1  # torch threads per learner rank
    placement_timeout_s: float = 120.0  # give up when the placement group cannot be placed in this time
    max_actor_restarts: int = 3  # restarts Ray grants a failed rollout actor (-1: unlimited)


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
    prm: PRMConfig = field(default_factory=PRMConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    resources: ResourcesConfig = field(default_factory=ResourcesConfig)
    resume: str | None = None  # arbor train: run directory to continue (same step, version, buffer and RNG)
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
    _positive("sft.num_problems", cfg.sft.num_problems, allow_zero=True)
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
    validate_data(cfg.task.data)
    validate_search(cfg.search)
    validate_value(cfg.value)
    validate_prm(cfg.prm, cfg.search)
    validate_train(cfg.train, cfg.resources)


def validate_data(d: DataConfig) -> None:
    """Checks on the ``task.data`` section; each error names its dotted key."""
    _choice("task.data.template", d.template, ("plain", "few_shot", "chat"))
    _choice("task.data.steps", d.steps, ("line", "paragraph"))
    if not 0.0 <= d.eval_fraction <= 1.0:
        raise ConfigError(f"config key 'task.data.eval_fraction' must lie in [0, 1]; got {d.eval_fraction}")
    if d.template == "few_shot" and d.few_shot < 1:
        raise ConfigError(f"config key 'task.data.few_shot' must be >= 1 with template=few_shot; got {d.few_shot}")


def validate_search(s: SearchConfig) -> None:
    """Checks on the ``search`` section; each error names its dotted key."""
    _choice("search.kind", s.kind, ("mcts", "beam", "best_of_n", "greedy", "shepherd"))
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


def validate_prm(p: PRMConfig, s: SearchConfig) -> None:
    """Checks on the ``prm`` section (and the search settings that need a PRM); each error names its key."""
    _choice("prm.kind", p.kind, ("explicit", "implicit"))
    _choice("prm.label", p.label, ("soft", "hard"))
    _choice("prm.loss", p.loss, ("regression", "pairwise"))
    _choice("prm.step_score", p.step_score, ("progress", "value"))
    for name in ("problems", "min_completions", "steps", "batch_size", "lr", "forward_batch_size"):
        _positive(f"prm.{name}", getattr(p, name))
    _positive("prm.beta", p.beta)
    _positive("prm.implicit_lr", p.implicit_lr)
    _positive("prm.weight_decay", p.weight_decay, allow_zero=True)
    _positive("prm.reward_lambda", p.reward_lambda, allow_zero=True)
    if not 0.0 < p.holdout_fraction < 1.0:
        raise ConfigError(f"config key 'prm.holdout_fraction' must lie in (0, 1); got {p.holdout_fraction}")
    if (s.leaf_value == "prm" or p.reward_lambda > 0) and not p.path:
        raise ConfigError(
            "search.leaf_value=prm and prm.reward_lambda > 0 need config key 'prm.path' (a PRM checkpoint)"
        )


def validate_train(t: TrainConfig, r: ResourcesConfig) -> None:
    """Checks on the ``train`` and ``resources`` sections; each error names its dotted key."""
    _choice("train.mode", t.mode, ("async", "sync", "local"))
    _choice("train.init", t.init, ("sft", "model"))
    _choice("train.policy_loss", t.policy_loss, ("decoupled_ppo", "ppo", "vtrace"))
    _choice("train.advantage_scale", t.advantage_scale, ("none", "tree_std"))
    _choice("train.is_mode", t.is_mode, ("cap", "mask"))
    _choice("train.sampler", t.sampler, ("fifo", "prioritized"))
    _choice("train.weight_sync", t.weight_sync, ("object_store", "collective"))
    _choice("train.engine", t.engine, ("deepspeed", "torch"))
    _choice("resources.strategy", r.strategy, ("PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"))
    if t.zero_stage not in (0, 1, 2):
        raise ConfigError(f"config key 'train.zero_stage' must be 0, 1 or 2; got {t.zero_stage}")
    for name in ("steps", "batch_size", "lr", "clip_eps", "is_cap", "sync_every", "buffer_capacity"):
        _positive(f"train.{name}", getattr(t, name))
    for name in ("sync_trees_per_round", "min_size_to_sample", "samples_per_insert", "log_every"):
        _positive(f"train.{name}", getattr(t, name))
    for name in ("max_wall_s", "snapshot_every_s", "warmup_steps", "weight_decay", "grad_clip", "value_coef"):
        _positive(f"train.{name}", getattr(t, name), allow_zero=True)
    _positive("train.entropy_coef", t.entropy_coef, allow_zero=True)
    for name in ("kl_coef", "max_policy_lag", "eval_every", "eval_search_simulations", "checkpoint_every"):
        _positive(f"train.{name}", getattr(t, name), allow_zero=True)
    _positive("train.tree_every", t.tree_every, allow_zero=True)
    _positive("train.negative_advantage_scale", t.negative_advantage_scale, allow_zero=True)
    if not 0.0 <= t.value_head_weight <= 1.0:
        raise ConfigError(f"config key 'train.value_head_weight' must lie in [0, 1]; got {t.value_head_weight}")
    if not 0.0 < t.min_lr_ratio <= 1.0:
        raise ConfigError(f"config key 'train.min_lr_ratio' must lie in (0, 1]; got {t.min_lr_ratio}")
    if t.min_size_to_sample > t.buffer_capacity:
        raise ConfigError(
            f"config key 'train.min_size_to_sample' ({t.min_size_to_sample}) exceeds 'train.buffer_capacity' "
            f"({t.buffer_capacity}): the learner could never sample"
        )
    if t.batch_size > t.buffer_capacity:
        raise ConfigError(
            f"config key 'train.batch_size' ({t.batch_size}) exceeds 'train.buffer_capacity' ({t.buffer_capacity})"
        )
    # A learner batch must fit the rate limiter's window (Reverb: 2 * error_buffer), or sampling deadlocks.
    if t.error_buffer < max(1.0, t.samples_per_insert) / 2 or 2 * t.error_buffer < t.batch_size:
        raise ConfigError(
            f"config key 'train.error_buffer' ({t.error_buffer}) must be at least half of 'train.batch_size' "
            f"({t.batch_size}): the learner samples a whole batch at once, and the rate limiter's window is "
            "2 x error_buffer wide"
        )
    if t.engine == "torch" and r.learner_ranks > 1:
        raise ConfigError(
            "config key 'train.engine=torch' trains one rank only (nothing all-reduces its gradients); "
            "use train.engine=deepspeed with 'resources.learner_ranks' > 1"
        )
    if t.batch_size % r.learner_ranks:
        raise ConfigError(
            f"config key 'train.batch_size' ({t.batch_size}) must divide evenly over "
            f"'resources.learner_ranks' ({r.learner_ranks})"
        )
    for name in ("rollout_actors", "learner_ranks", "actor_threads", "learner_threads", "placement_timeout_s"):
        _positive(f"resources.{name}", getattr(r, name))
    for name in ("actor_cpus", "actor_gpus", "learner_cpus", "learner_gpus", "buffer_cpus"):
        _positive(f"resources.{name}", getattr(r, name), allow_zero=True)
    if r.learner_gpus not in (0, 1) and r.learner_gpus != int(r.learner_gpus):
        raise ConfigError(f"config key 'resources.learner_gpus' must be a whole number of GPUs; got {r.learner_gpus}")
    if r.actor_cpus + r.actor_gpus == 0 or r.learner_cpus + r.learner_gpus == 0 or r.buffer_cpus == 0:
        raise ConfigError(
            "config keys 'resources.actor_cpus/actor_gpus', 'resources.learner_cpus/learner_gpus' and "
            "'resources.buffer_cpus' must reserve something (a placement group bundle cannot be empty)"
        )
    if r.max_actor_restarts < -1:
        raise ConfigError(f"config key 'resources.max_actor_restarts' must be >= -1; got {r.max_actor_restarts}")


def to_yaml(cfg: ArborConfig) -> str:
    """The resolved config as YAML, as written into every run directory."""
    return OmegaConf.to_yaml(OmegaConf.structured(cfg))
