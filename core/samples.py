"""The per-step learner sample: what actors produce from a search tree and the learner trains on.

This module is a meeting point of ``actors`` and ``learner`` (they never import each other). One
sample is one edge of a search tree, i.e. one step of the step-level MDP: the state (prompt plus the
steps so far), the action (the next step's tokens), the behaviour policy's per-token log-probs and
version (for the off-policy correction), and the tree's Monte-Carlo values around the step.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from arbor.core.errors import ConfigError, DataError
from arbor.core.tasks.base import STEP_SEP

# Sources the learner imitates (maximum likelihood, ``learner.losses.imitation_loss``) instead of weighting by
# an advantage: responses the search assembled from a finished tree (``actors.journey``), which no policy
# sampled as written, so there is no behaviour probability to correct with.
IMITATION_SOURCES = ("journey", "shortcut", "hindsight")
# Imitated responses that go to the self-imitation archive only, never into the buffer's queue (so they do not
# count against the rate limiter): ``train.hindsight``'s relabelled paths (``actors.hindsight``), many a tree.
ARCHIVE_ONLY_SOURCES = ("hindsight",)
DEMO_FLAG = "demonstration"  # meta key set on off-policy traces inserted with ReplayBuffer.insert_demonstrations
# Meta flag of an imitated response the replay buffer draws again from its archive of solved problems
# (``buffer.solution_replay``): it was made by an older policy on purpose, so it is no measure of policy lag.
REPLAYED_FLAG = "replayed_solution"


def in_policy_lineage(sample: StepSample) -> bool:
    """Whether ``sample``'s policy version says how stale the learner's data is: not a demonstration from
    outside the run, not a solution replayed from the archive."""
    return not (sample.meta.get(DEMO_FLAG) or sample.meta.get(REPLAYED_FLAG))


@dataclass(frozen=True)
class StepSample:
    state_tokens: list[int]  # prompt + earlier steps, token ids
    action_tokens: list[int]  # this step's token ids
    behaviour_logprobs: list[float]  # log pi_behav(token) per action token (the distribution actually sampled)
    policy_version: int  # version of the weights that generated the action
    advantage: float  # V(child) - V(parent), V read off the tree (mean outcome of the leaves below)
    value_target: float  # V(child): target of the value head at the action's last token
    state_value: float  # V(parent): the baseline the advantage subtracts
    reward: float = 0.0  # outcome if the action ends the response, else 0
    terminal: bool = False  # the action ends the response
    problem_uid: str = ""  # which problem the tree searched
    meta: dict[str, Any] = field(default_factory=dict)  # tree kind, node ids and the like, for inspection
    source: str = "search"  # search (a tree edge) | demonstration | journey | shortcut | hindsight (IMITATION_SOURCES)
    visit_share: float | None = None  # the search's visits to this step over its siblings' (MCTS), if branched

    def __post_init__(self) -> None:
        if len(self.action_tokens) != len(self.behaviour_logprobs):
            raise ValueError(
                f"a step sample needs one behaviour log-prob per action token; "
                f"got {len(self.action_tokens)} tokens and {len(self.behaviour_logprobs)} log-probs"
            )

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> StepSample:
        return cls(**data)


def demonstration_samples(path: str, tokenizer: Any, version: int) -> list[StepSample]:
    """JSONL rows ``{"prompt": ..., "response": ...}`` as step samples (one per step, advantage +1 on each),
    for ``train.demonstrations``.

    A demonstration is a correct trace from outside the policy: its steps get value target 1 and a
    positive advantage; their behaviour log-probs are unknown and set to 0 (probability 1), so the
    decoupled-PPO weight pi_prox / pi_behav is at most 1 and never amplifies them.
    """
    out = []
    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"config key 'train.demonstrations': file not found: {file}")
    for lineno, raw in enumerate(file.read_bytes().splitlines(), 1):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise DataError(f"{file}:{lineno}: not UTF-8 text (byte {exc.start}); is this a JSONL file?") from None
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            prompt, response = str(row["prompt"]), str(row["response"])
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise DataError(f"{file}:{lineno}: demonstration needs JSON with 'prompt' and 'response' ({exc})") from None
        state = list(tokenizer.encode(prompt, add_special_tokens=False))
        out += response_samples(
            state,
            response,
            tokenizer,
            version,
            problem_uid=f"{file.name}:{lineno}",
            source="demonstration",
            meta={"source": str(file)},
        )
    return out


def response_samples(
    state: list[int],
    response: str,
    tokenizer: Any,
    version: int,
    *,
    problem_uid: str,
    source: str,
    meta: dict[str, Any] | None = None,
    step_sep: str = STEP_SEP,
) -> list[StepSample]:
    """A correct response after the state ``state`` (token ids) as step samples, one per step: value target 1,
    advantage +1, behaviour log-probs 0 (unknown), the last step ending at eos as the policy's do."""
    out = []
    state = list(state)
    steps = [s + step_sep for s in response.rstrip(step_sep).split(step_sep)]
    for i, step in enumerate(steps):
        ids = list(tokenizer.encode(step, add_special_tokens=False))
        last = i == len(steps) - 1
        if last:
            ids = ids[:-1] + [tokenizer.eos_token_id]  # a response ends at eos, as the policy's do
        out.append(
            StepSample(
                state_tokens=list(state),
                action_tokens=ids,
                behaviour_logprobs=[0.0] * len(ids),
                policy_version=version,
                advantage=1.0,
                value_target=1.0,
                state_value=1.0,
                reward=1.0 if last else 0.0,
                terminal=last,
                problem_uid=problem_uid,
                meta=dict(meta or {}),
                source=source,
            )
        )
        state += ids
    return out
