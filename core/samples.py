"""The per-step learner sample: what actors produce from a search tree and the learner trains on.

This module is the meeting point of ``actors`` and ``learner`` (they never import each other). One
sample is one edge of a search tree, i.e. one step of the step-level MDP: the state (prompt plus the
steps so far), the action (the next step's tokens), the behaviour policy's per-token log-probs and
version (for the off-policy correction), and the tree's Monte-Carlo values around the step.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


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
