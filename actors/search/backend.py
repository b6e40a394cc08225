"""The inference-backend interface every search uses: "continue these prefixes by one step".

A prefix is given as segments of token ids (the prompt, then each step so far), which is exactly the
path of a search-tree node, so a backend can cache per segment and share a node's prefix among its
children. The HF transformers implementation is ``actors.search.hf_backend.HFStepBackend``; a vLLM one
could sit behind the same Protocol.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

Segments = tuple[tuple[int, ...], ...]  # prompt tokens, then each step's tokens


@dataclass(frozen=True)
class StepRequest:
    segments: Segments  # the prefix to continue
    num_samples: int  # continuations to sample; 0 only evaluates the prefix (its value)
    max_tokens: int  # longest step to generate, in tokens
    temperature: float = 1.0  # 0 is greedy
    # distinct: draw the samples without replacement, none equal to a step in ``exclude`` or to each other
    # (actors.search.distinct); exclude holds the node's known steps as (token ids, per-token log-probs)
    distinct: bool = False
    exclude: tuple[tuple[tuple[int, ...], tuple[float, ...]], ...] = ()
    # distinct_batched: draw all of a distinct request's missing samples in each round (conditioned on the steps
    # known before it); a draw that repeats another of its round is dropped and drawn again in the next. Fewer
    # model calls than one draw a round, at the price of the dropped draws' tokens
    distinct_batched: bool = False


@dataclass(frozen=True)
class StepOutput:
    token_ids: list[int]  # the step's tokens, separator (or eos) included
    logprobs: list[float]  # log-prob of each token under the tempered policy (not conditioned by ``distinct``)
    text: str  # decoded step
    finish: str  # step (separator seen) | eos | length (max_tokens reached)
    value: float | None  # value estimate of the state after this step (None without a value head)


@dataclass
class StepResult:
    prefix_value: float | None  # value estimate of the prefix's state
    steps: list[StepOutput] = field(default_factory=list)  # num_samples continuations, in sampling order
    policy_version: int = 0  # weights that produced them
    tokens_forwarded: int = 0  # tokens this request ran through the model (cache misses included)
    tokens_generated: int = 0  # tokens sampled for this request
    model_calls: int = 0  # forward passes this request took part in


class StepBackend(Protocol):
    """Samples next reasoning steps for many prefixes in one batched call."""

    policy_version: int

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` (no special tokens): how a prompt becomes the root segment."""
        ...

    def continue_steps(self, requests: Sequence[StepRequest]) -> list[StepResult]:
        """One result per request, in order; sampled steps end at the step separator, eos or max_tokens."""
        ...

    def release(self, prompt: tuple[int, ...]) -> None:
        """The caller is done with every prefix under ``prompt``: cached state for it may go."""
        ...
