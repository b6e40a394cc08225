"""The config schema: omegaconf structured dataclasses, one line of doc per field.

The defaults are the default recipe (the embedded default that ``make run`` trains), so
``configs/countdown_tiny.yaml`` names nothing it does not have to, and every other recipe names only what
differs. Allowed values are the schema's types: a choice is a :class:`Choice` enum (omegaconf refuses any
other string, naming the key), and a number's bounds are its field's metadata (``positive``, ``nonneg``,
``unit``, ``between``), checked for every field by ``arbor.core.config.checks``. Fields that only one
variant uses live in that variant's own section (``search.mcts``, ``search.beam``, ``search.best_of_n``,
``train.decoupled_ppo``, ``prm.implicit``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any


class Choice(str, Enum):
    """A config choice: compares, prints and serialises as its plain string value."""

    def __str__(self) -> str:
        return str(self.value)

    def __format__(self, spec: str) -> str:
        return format(str(self.value), spec)


def choices(name: str, *values: str) -> type[Choice]:
    """A :class:`Choice` enum named ``name`` whose members are ``values`` (each its own name)."""
    return Choice(name, {v: v for v in values}, module=__name__, qualname=name)


def _bounded(default: Any, **bounds: float) -> Any:
    return field(default=default, metadata=bounds)


def positive(default: float) -> Any:
    """A number > 0."""
    return _bounded(default, gt=0)


def nonneg(default: float) -> Any:
    """A number >= 0."""
    return _bounded(default, ge=0)


def unit(default: float) -> Any:
    """A number in [0, 1]."""
    return _bounded(default, ge=0, le=1)


def between(default: float, low: float, high: float) -> Any:
    """A number in [low, high]."""
    return _bounded(default, ge=low, le=high)


def each_positive(default: list) -> Any:
    """A list of numbers, each > 0."""
    return field(default_factory=lambda: list(default), metadata={"gt": 0})


Arch = choices("Arch", "llama", "qwen2")
Dtype = choices("Dtype", "float32", "bfloat16", "float16")
TaskName = choices("TaskName", "countdown", "arith", "gsm8k", "math")
Template = choices("Template", "plain", "few_shot", "chat")
StepUnit = choices("StepUnit", "line", "paragraph")
EngineKind = choices("EngineKind", "deepspeed", "torch")
WandbMode = choices("WandbMode", "offline", "online", "disabled")
SearchKind = choices("SearchKind", "mcts", "beam", "best_of_n", "greedy", "shepherd")
CurveKind = choices("CurveKind", "greedy", "best_of_n", "beam", "mcts")
LeafValue = choices("LeafValue", "value_head", "prm")
TerminalValue = choices("TerminalValue", "verifier", "value_head")
AnswerRule = choices("AnswerRule", "visits", "value", "vote", "value_vote")
PRMKind = choices("PRMKind", "explicit", "implicit")
PRMLabel = choices("PRMLabel", "soft", "hard")
PRMLoss = choices("PRMLoss", "regression", "pairwise")
StepScore = choices("StepScore", "progress", "value")
TrainMode = choices("TrainMode", "async", "sync", "local")
TrainInit = choices("TrainInit", "sft", "model")
PolicyLoss = choices("PolicyLoss", "decoupled_ppo", "ppo", "vtrace")
AdvantageScale = choices("AdvantageScale", "none", "tree_std")
ISMode = choices("ISMode", "cap", "mask")
Sampler = choices("Sampler", "fifo", "newest", "prioritized")
WeightSync = choices("WeightSync", "object_store", "collective")
JourneyMode = choices("JourneyMode", "off", "journey", "shortcut")
Strategy = choices("Strategy", "PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD")


@dataclass
class ModelConfig:
    path: str | None = None  # local HF checkpoint dir or GGUF file to load; None: the tiny model below, from scratch
    dtype: Dtype = Dtype.float32  # weights of the policy, the search backend and checkpoints (the learner: see train)
    arch: Arch = Arch.llama  # architecture of the from-scratch model
    hidden_size: int = positive(192)  # width of the from-scratch model
    num_layers: int = positive(4)  # transformer blocks
    num_heads: int = positive(4)  # attention heads (key/value heads equal heads)
    intermediate_size: int = positive(512)  # MLP width
    max_seq_len: int = positive(128)  # longest prompt + response in tokens
    init_seed: int = 0  # seed for the from-scratch weights


@dataclass
class CountdownConfig:
    min_numbers: int = between(3, 2, 6)  # numbers given at difficulty level 0
    max_numbers: int = between(4, 2, 6)  # numbers given at the hardest level (levels = max - min + 1)
    max_operand: int = positive(8)  # given numbers are drawn from 1..max_operand
    max_target: int = positive(30)  # targets lie in 1..max_target
    min_steps: int = positive(2)  # the shortest solution needs at least this many steps


@dataclass
class ArithConfig:
    min_ops: int = positive(2)  # operators in a chain at difficulty level 0
    max_ops: int = positive(4)  # operators at the hardest level
    max_operand: int = positive(20)  # operands are drawn from 1..max_operand


@dataclass
class DataConfig:
    path: str | None = None  # JSONL file for task.name gsm8k | math
    question_key: str | None = None  # field holding the problem; None: the task's default (question | problem)
    answer_key: str | None = None  # field holding the reference answer; None: the task's default (answer)
    solution_key: str | None = None  # field holding a worked solution, if any; None: the task's default
    eval_fraction: float = unit(0.1)  # share of a single file held out for evaluation when no eval_path (1: all)
    eval_path: str | None = None  # separate JSONL for held-out problems
    template: Template = Template.plain  # plain (question + newline) | few_shot (worked examples) | chat (model's)
    few_shot: int = nonneg(4)  # worked examples of a few_shot prompt: the first rows of path, kept out of use
    steps: StepUnit = StepUnit.line  # one step, in gold traces and in search: line ("\n") | paragraph ("\n\n")
    tokenizer: str | None = None  # directory whose chat template wraps prompts (template=chat); None: the policy's


@dataclass
class TaskConfig:
    name: TaskName = TaskName.countdown  # which task
    countdown: CountdownConfig = field(default_factory=CountdownConfig)
    arith: ArithConfig = field(default_factory=ArithConfig)
    data: DataConfig = field(default_factory=DataConfig)
    eval_size: int = positive(200)  # held-out problems (fixed per config: seeds eval_seed .. eval_seed + size - 1)
    eval_seed: int = nonneg(0)  # first held-out seed; held-out seeds live in a range disjoint from training seeds
    eval_mix: list[float] | None = None  # weight per difficulty level for held-out problems; None: uniform


@dataclass
class SFTConfig:
    steps: int = nonneg(700)  # optimizer steps
    batch_size: int = positive(64)  # sequences per step
    lr: float = positive(3e-3)  # peak learning rate (AdamW)
    min_lr_ratio: float = unit(0.1)  # cosine decay ends at lr * min_lr_ratio
    warmup_steps: int = nonneg(50)  # linear warm-up steps
    weight_decay: float = nonneg(0.01)  # AdamW weight decay
    grad_clip: float = nonneg(1.0)  # max gradient norm (0: no clipping)
    difficulty_mix: list[float] | None = None  # weight per difficulty level of training problems; None: uniform
    corrupt_fraction: float = unit(0.1)  # share of traces with one injected error, so the init is imperfect
    num_problems: int = nonneg(1000)  # distinct problems SFT demonstrates, a pool RL never draws; 0: the stream
    engine: EngineKind = EngineKind.deepspeed  # which engine runs the update
    zero_stage: int = between(0, 0, 2)  # DeepSpeed ZeRO stage
    seed: int = nonneg(0)  # data order and corruption seed
    eval_before_after: bool = True  # evaluate the init and the trained model and print a before/after table


@dataclass
class EvalConfig:
    batch_size: int = positive(100)  # problems per generation batch
    max_new_tokens: int = positive(64)  # response length limit in tokens
    num_samples: int = nonneg(4)  # sampled responses per problem for pass@k / maj@k (0 disables sampling)
    temperature: float = nonneg(1.0)  # sampling temperature for pass@k / maj@k
    top_p: float = _bounded(1.0, gt=0, le=1)  # nucleus sampling threshold
    ks: list[int] = each_positive([1, 4])  # k values reported for pass@k and maj@k
    seed: int = 0  # sampling seed
    responses: str | None = None  # JSONL of given responses to score instead of generating (uid, question, prompt)
    response_key: str = "response"  # field of eval.responses holding the response text


@dataclass
class WandbConfig:
    mode: WandbMode = WandbMode.offline  # where metrics go besides metrics.jsonl
    project: str = "arbor"  # wandb project
    entity: str | None = None  # wandb entity (team or user)
    tags: list[str] = field(default_factory=list)  # run tags


@dataclass
class RunConfig:
    root: str = "runs"  # parent directory of run directories
    name: str | None = None  # run directory name; None: <command>-<timestamp>


@dataclass
class MCTSConfig:
    simulations: int = positive(16)  # simulations per tree (leaf expansions plus terminal revisits)
    c_puct: float = positive(1.5)  # PUCT exploration constant (Silver et al. 2017)
    dirichlet_alpha: float = positive(0.3)  # concentration of the Dirichlet noise mixed into the root priors
    dirichlet_eps: float = unit(0.25)  # weight of that noise; 0 disables it (evaluation)
    virtual_loss: float = nonneg(1.0)  # visits of value 0 added along a selected path while its leaf is pending
    leaves_per_round: int = positive(4)  # leaves one tree may add to one batched model call
    token_budget: int = nonneg(0)  # stop once the tree has generated this many tokens; 0: simulations decide
    # own temperature: with distinct_children, steps at 0.5 find more than best-of-N at 1 (BENCHMARKS.md); 1 errs more
    temperature: float = nonneg(0.5)
    close_ended: bool = True  # an ended step takes no more simulations; a node whose steps all ended samples new ones


@dataclass
class BeamConfig:
    width: int = positive(8)  # candidates per round N; the top N / search.children are kept and expanded


@dataclass
class BestOfNConfig:
    num_samples: int = positive(8)  # independent chains per problem (also shepherd's first chains)


@dataclass
class SearchConfig:
    kind: SearchKind = SearchKind.mcts  # mcts | beam | best_of_n | greedy | shepherd (best-of-N + completions)
    children: int = positive(4)  # steps per expansion (MCTS, merging duplicates; beam's M; shepherd's completions)
    temperature: float = nonneg(1.0)  # sampling temperature of the behaviour policy (MCTS: mcts.temperature); 0 greedy
    max_depth: int = positive(8)  # steps per response before a node counts as terminal
    max_step_tokens: int = positive(48)  # tokens per step before it is cut (and counted terminal)
    max_response_tokens: int = positive(96)  # tokens per response (all steps); must allow one full step
    leaf_value: LeafValue = LeafValue.value_head  # what values a non-terminal leaf
    terminal_value: TerminalValue = TerminalValue.verifier  # verifier (training) | value_head (never sees answers)
    answer_by: AnswerRule = AnswerRule.visits  # how a tree picks its final answer
    step_checks: bool = True  # tasks that can judge a step as written (countdown, arith) score an illegal one 0
    distinct_children: bool = True  # MCTS: a node's samples are drawn without replacement, never a step it has
    # distinct_children, batched: a node's missing samples are drawn together each round and a twin of another is
    # drawn again next round (false: one draw a round, each conditioned on the last; no tokens spent on twins)
    distinct_batched: bool = False
    trees_in_flight: int = positive(256)  # trees the driver advances together, one batched model call per round
    max_batch_rows: int = positive(1024)  # sequences per model call; larger rounds are split
    lean_decode: bool = True  # Llama/Qwen2 decode over a preallocated KV buffer (search/decode.py); else HF's
    budgets: list[int] = each_positive([])  # test-time scaling budgets for `arbor eval`; [] skips it
    kinds: list[CurveKind] = field(default_factory=lambda: list(CurveKind))  # kinds on the scaling curve
    seed: int = 0  # sampling and Dirichlet-noise seed
    mcts: MCTSConfig = field(default_factory=MCTSConfig)  # search.kind=mcts
    beam: BeamConfig = field(default_factory=BeamConfig)  # search.kind=beam
    best_of_n: BestOfNConfig = field(default_factory=BestOfNConfig)  # search.kind=best_of_n | shepherd


def behaviour_temperature(search: SearchConfig) -> float:
    """The temperature ``search`` samples its steps at (MCTS has its own, ``search.mcts.temperature``): the
    behaviour policy the learner's log-probs must be taken at."""
    return search.mcts.temperature if search.kind == SearchKind.mcts else search.temperature


@dataclass
class ValueConfig:
    problems: int = _bounded(512, ge=2)  # training problems the policy samples on (held-out content skipped)
    samples_per_problem: int = positive(8)  # sampled responses per problem; each labels its step prefixes
    temperature: float = nonneg(1.0)  # sampling temperature of the policy
    difficulty_mix: list[float] | None = None  # weight per difficulty level of the problems; None: uniform
    holdout_fraction: float = _bounded(0.2, gt=0, lt=1)  # share of problems kept out of the fit, for the report
    steps: int = positive(400)  # optimizer steps on the value head (the trunk stays frozen)
    batch_size: int = positive(256)  # labelled step prefixes per step
    lr: float = positive(1e-2)  # peak learning rate (AdamW, cosine decay)
    weight_decay: float = nonneg(0.0)  # AdamW weight decay on the head's weight
    forward_batch_size: int = positive(64)  # sequences per frozen-trunk forward when reading hidden states
    calibration_bins: int = positive(10)  # equal-width bins of the reliability table and the ECE
    seed: int = 0  # problem stretch, sampling and minibatch order


@dataclass
class ImplicitPRMConfig:
    beta: float = positive(0.05)  # r_t = beta x log(pi_prm / pi_ref) of each response token (PRIME's 0.05)
    lr: float = positive(1e-4)  # learning rate of the whole model copy (AdamW)
    online: bool = False  # in training: update it on every finished tree's verified responses (PRIME)


@dataclass
class PRMConfig:
    path: str | None = None  # PRM checkpoint (`arbor prm` output) for search.leaf_value=prm and dense rewards
    kind: PRMKind = PRMKind.explicit  # explicit: a head on a trunk, fit on step labels | implicit: PRIME's PRM
    base: str | None = None  # trunk under the PRM head: None, the policy (model.path); else a separate model
    trees: str | None = None  # JSONL of saved search trees to label; None: search prm.problems problems first
    problems: int = positive(256)  # training problems searched (with the search section) when prm.trees is unset
    label: PRMLabel = PRMLabel.soft  # Math-Shepherd label: soft (share of completions correct) | hard (any)
    loss: PRMLoss = PRMLoss.regression  # regression (cross-entropy to labels) | pairwise (Bradley-Terry, siblings)
    min_completions: int = positive(1)  # label a step only with at least this many scored completions below it
    holdout_fraction: float = _bounded(0.2, gt=0, lt=1)  # share of the problems (trees) kept out of the fit
    steps: int = positive(400)  # optimizer steps on the head (the trunk stays frozen)
    batch_size: int = positive(256)  # labelled steps (regression) or pairs (pairwise) per step
    lr: float = positive(1e-2)  # peak learning rate (AdamW, cosine decay)
    weight_decay: float = nonneg(0.0)  # AdamW weight decay on the head's weight
    forward_batch_size: int = positive(64)  # sequences per frozen-trunk forward
    reward_lambda: float = nonneg(0.0)  # dense reward: a step earns lambda x its step score on top of the outcome
    step_score: StepScore = StepScore.progress  # progress: PRM(after) - PRM(before) | value: PRM(after)
    seed: int = 0  # problems, search and minibatch order
    implicit: ImplicitPRMConfig = field(default_factory=ImplicitPRMConfig)  # prm.kind=implicit


@dataclass
class DecoupledPPOConfig:
    is_cap: float = positive(5.0)  # cap on the behaviour importance weight pi_prox / pi_behav
    is_mode: ISMode = ISMode.cap  # cap: truncate the behaviour weight at is_cap | mask: drop tokens above it


@dataclass
class BufferConfig:
    capacity: int = positive(8192)  # replay buffer items
    sampler: Sampler = Sampler.fifo  # fifo: oldest first, each once | newest: newest first | prioritized: |adv|
    max_policy_lag: int = nonneg(8)  # items more than this many versions behind are evicted, never trained on
    # Reverb SampleToInsertRatio: learner samples per inserted item. Below 1 the actors run ahead of the learner
    # (a tree's many step samples outnumber what the learner can take) and more problems get searched
    samples_per_insert: float = positive(0.25)
    min_size_to_sample: int = positive(512)  # the learner waits until the buffer holds this many items
    error_buffer: float = positive(1024.0)  # slack of the rate limiter around the ratio, in samples
    # self-imitation: this share of every learner batch is drawn from an archive of each problem's newest
    # imitated response (train.journey.mode shortcut or journey makes them); 0 is off (actors/replay.py)
    solution_replay: float = _bounded(0.5, ge=0, lt=1)
    solution_capacity: int = positive(4096)  # problems the archive keeps, the longest-archived dropped first


@dataclass
class JourneyConfig:
    # shortcut: each solved tree's best path | journey: a trace with its dead ends | off. The trace is imitated
    # beside the tree's own samples (actors/journey.py, docs/training-notes.md)
    mode: JourneyMode = JourneyMode.shortcut
    coef: float = nonneg(1.0)  # weight of the imitation loss on the traces' tokens
    max_dead_ends: int = nonneg(2)  # failed branches a journey trace walks before the successful one


@dataclass
class TrainConfig:
    mode: TrainMode = TrainMode("async")  # async: concurrent | sync: search a round, train on it | local: no Ray
    init: TrainInit = TrainInit.sft  # sft: the sft section first (on model.path or from scratch) | model: as is
    steps: int = positive(60)  # learner steps budget
    max_wall_s: float = nonneg(0.0)  # also stop after this many seconds of RL (0: steps alone decide)
    snapshot_every_s: float = nonneg(0.0)  # save the policy (HF format) to snapshots/t-SECONDS this often
    batch_size: int = positive(512)  # step samples per learner step, over all ranks
    lr: float = positive(1e-4)  # peak learning rate (AdamW)
    min_lr_ratio: float = _bounded(1.0, gt=0, le=1)  # cosine decay ends at lr * min_lr_ratio (1: constant)
    warmup_steps: int = nonneg(10)  # linear warm-up steps
    weight_decay: float = nonneg(0.0)  # AdamW weight decay
    grad_clip: float = nonneg(1.0)  # max gradient norm (0: no clipping)
    policy_loss: PolicyLoss = PolicyLoss.decoupled_ppo  # decoupled_ppo | ppo | vtrace
    clip_eps: float = positive(0.2)  # PPO clip range around the proximal policy (ppo, decoupled_ppo)
    # weight of the policy gradient on the sampled steps; 0 with train.journey leaves expert iteration: the
    # learner imitates what the search solved and fits the value head, and no step is pushed by its advantage
    policy_coef: float = nonneg(1.0)
    value_coef: float = nonneg(0.5)  # weight of the value loss
    entropy_coef: float = nonneg(0.0)  # weight of the entropy bonus
    kl_coef: float = nonneg(0.0)  # weight of the k3 KL to the frozen init policy (0: no reference model kept)
    value_trunk_grad: bool = False  # let the value loss train the shared trunk too (False: the head only)
    gradient_checkpointing: bool = False  # recompute each layer in the backward: ~1/3 more learner compute, a
    # fraction of the activation memory (a real model's long prompts; the tiny default does not need it)
    global_advantage: float = 1.0  # adds this times V(child) - V(root) to each step's local advantage (TreeRL)
    negative_advantage_scale: float = nonneg(1.0)  # multiplies negative advantages (0: better-than-baseline only)
    advantage_scale: AdvantageScale = AdvantageScale.none  # tree_std: divide by a tree's outcome std (GRPO)
    value_head_weight: float = unit(0.0)  # mix of the value head into the tree's Monte-Carlo V for advantages
    sync_every: int = positive(4)  # learner steps between weight publications (each a new policy version)
    weight_sync: WeightSync = WeightSync.object_store  # object_store: one ray.put | collective: torch.distributed
    sync_trees_per_round: int = positive(32)  # sync, local: trees searched (over all actors) per round
    visit_coef: float = nonneg(0.0)  # weight of the cross-entropy to the search's visit shares over sibling steps
    # Search budget by what the actor has seen: a problem it solved is not searched again (its best path keeps
    # teaching from the self-imitation archive), and one whose tree failed gets retry_simulations MCTS
    # simulations when it comes round again (0: search.mcts.simulations). Actor-local; a restart forgets.
    skip_solved: bool = False
    retry_simulations: int = nonneg(0)
    # hindsight relabelling: up to this many paths of each tree that end at another number enter the solution
    # archive as solutions of the (not held-out) problem asking for that number; 0 is off (actors/hindsight.py)
    hindsight: int = nonneg(0)
    journey: JourneyConfig = field(default_factory=JourneyConfig)  # imitation of what each solved tree found
    demonstrations: str | None = None  # JSONL of {prompt, response} traces inserted as off-policy demonstrations
    eval_every: int = nonneg(20)  # held-out greedy evaluation every this many learner steps (0: before/after)
    eval_search_simulations: int = nonneg(8)  # MCTS simulations of the final "with search" evaluation (0 skips)
    checkpoint_every: int = nonneg(20)  # checkpoint every this many learner steps (0: only at the end)
    keep_checkpoints: int = nonneg(3)  # step checkpoints kept: the newest K and the best held-out one (0: all)
    log_every: int = positive(2)  # learner steps between metric rows
    tree_every: int = nonneg(20)  # learner steps between rendered sample trees (run dir and wandb)
    engine: EngineKind = EngineKind.deepspeed  # which engine runs the update
    zero_stage: int = between(0, 0, 2)  # DeepSpeed ZeRO stage
    seed: int = 0  # problem shards, sampling and minibatch seed
    decoupled_ppo: DecoupledPPOConfig = field(default_factory=DecoupledPPOConfig)  # train.policy_loss=decoupled_ppo


@dataclass
class ResourcesConfig:
    address: str | None = None  # Ray cluster to join; None: $RAY_ADDRESS if set (ray job submit), else start here
    rollout_actors: int = positive(1)  # rollout actors (tree search)
    actor_cpus: float = nonneg(1.0)  # CPUs per rollout actor
    actor_gpus: float = nonneg(0.0)  # GPUs per rollout actor (fractions share one inference GPU)
    learner_ranks: int = positive(1)  # learner ranks (one torch.distributed group: gloo on CPU, nccl on GPU)
    learner_cpus: float = nonneg(1.0)  # CPUs per learner rank
    learner_gpus: float = nonneg(0.0)  # GPUs per learner rank (0 or whole GPUs)
    buffer_cpus: float = nonneg(0.1)  # CPUs reserved for the replay buffer actor
    actor_resources: dict[str, float] = field(default_factory=dict)  # custom node resources each actor needs
    learner_resources: dict[str, float] = field(default_factory=dict)  # custom node resources each rank needs
    strategy: Strategy = Strategy.PACK  # placement group strategy
    actor_threads: int = positive(1)  # torch threads per rollout actor
    learner_threads: int = positive(1)  # torch threads per learner rank
    placement_timeout_s: float = positive(120.0)  # give up when the placement group cannot be placed in this time
    max_actor_restarts: int = _bounded(3, ge=-1)  # restarts Ray grants a failed rollout actor (-1: unlimited)


@dataclass
class DebugConfig:
    """Fault injection for bench/faults.py; off by default and never needed to train."""

    learner_slowdown: float = _bounded(1.0, ge=1)  # each learner step takes this many times as long (backpressure)
    poison_problem_every: int = nonneg(0)  # every Nth problem of an actor's shard has a malformed reference
    nan_loss_every: int = nonneg(0)  # every Nth learner update computes a NaN loss


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
    buffer: BufferConfig = field(default_factory=BufferConfig)
    resources: ResourcesConfig = field(default_factory=ResourcesConfig)
    debug: DebugConfig = field(default_factory=DebugConfig)
    resume: str | None = None  # arbor train: a run directory to continue (its latest), or RUN/checkpoints/step-N
    threads: int = nonneg(0)  # torch intra-op threads; 0 keeps torch's default
