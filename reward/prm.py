"""A process reward model: a causal LM trunk and a scalar head scoring every reasoning-step prefix.

``arbor prm`` (``launch/prm.py``) trains the head on Math-Shepherd labels or sibling preferences read off
search trees (``reward.prm_labels``) and saves it beside the trunk, in the layout of every Arbor
checkpoint (``value_head.safetensors`` next to an HF model directory). Loaded here, it plugs in twice:

- into search as the leaf evaluator: :meth:`ProcessRewardModel.scorer` is the ``Scorers.prm`` of
  ``actors.search`` (``search.leaf_value=prm``), scoring each new step's state;
- into the learner as a dense step reward: :meth:`ProcessRewardModel.score_tree` scores every node of a
  finished tree, and ``reward.prm_labels.dense_step_rewards`` turns the scores into the per-step rewards
  that ``arbor.learner.advantages.tree_to_samples`` adds to the outcome.

Text goes in, not token ids: the prompt and each step are encoded one by one and concatenated, and a
state is scored at the last token of its last segment, so a PRM on another tokenizer than the policy's
works the same way, and training reads exactly the positions that inference scores.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from arbor.core.batching import right_pad
from arbor.core.model import (
    ValueHead,
    forward_with_hidden,
)
from arbor.core.tasks.base import STEP_SEP
from arbor.core.tree import SearchTree


def encode_segments(tokenizer: PreTrainedTokenizerBase, segments: Sequence[str]) -> tuple[list[int], list[int]]:
    """Token ids of ``segments`` (prompt, step 1, step 2, ...) encoded one by one, and the index of each
    segment's last token (an empty segment ends where the one before it did)."""
    ids: list[int] = []
    ends: list[int] = []
    for segment in segments:
        ids += tokenizer.encode(segment, add_special_tokens=False)
        if not ids:
            raise ValueError("the first segment (the prompt) encodes to no tokens")
        ends.append(len(ids) - 1)
    return ids, ends


def split_steps(response: str, step_sep: str = STEP_SEP) -> list[str]:
    """A response cut after every step separator, separators kept: the steps a search tree holds."""
    return [s for s in re.split(f"(?<={re.escape(step_sep)})", response) if s]


class ProcessRewardModel:
    """Scores states (prompt + steps so far) with P(a correct answer follows) under the labels it was fit on."""

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        head: ValueHead | None,
        *,
        step_sep: str = STEP_SEP,
        batch_size: int = 32,
    ) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.head = head.eval() if head is not None else None  # None: a subclass scores states its own way
        self.step_sep = step_sep
        self.batch_size = batch_size
        self.device = next(model.parameters()).device
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self.tokens_forwarded = 0  # the PRM's own cost, apart from the policy's

    @torch.no_grad()
    def score_paths(self, paths: Sequence[Sequence[str]]) -> list[list[float]]:
        """For each path (prompt, step 1, ..., step k): the score of the state after each segment ([k + 1])."""
        encoded = [encode_segments(self.tokenizer, p) for p in paths]
        out: list[list[float]] = []
        for start in range(0, len(encoded), self.batch_size):
            chunk = encoded[start : start + self.batch_size]
            ids, mask = right_pad([ids for ids, _ in chunk], self.pad_id, self.device)
            values = self.state_values(ids, mask, [ends[0] + 1 for _, ends in chunk])  # [B, T]
            self.tokens_forwarded += int(mask.sum())
            out += [values[i, ends].tolist() for i, (_, ends) in enumerate(chunk)]
        return out

    def state_values(self, ids: torch.Tensor, mask: torch.Tensor, prompt_lengths: list[int]) -> torch.Tensor:
        """Score of the state ending at every position ([B, T] ids and mask -> [B, T]): the head on the trunk."""
        assert self.head is not None
        _, hidden, _ = forward_with_hidden(self.model, ids, mask)  # hidden [B, T, H]
        return self.head(hidden.float())

    def score(self, prompt: str, response: str) -> float:
        """The score of the state ``prompt + response`` (``response`` is cut into steps at the separator)."""
        return self.score_paths([[prompt, *split_steps(response, self.step_sep)]])[0][-1]

    def scorer(self) -> Callable[[str, str], float]:
        """``(prompt, response so far) -> score``: the ``Scorers.prm`` a search calls on every new step."""
        return self.score

    def score_tree(self, tree: SearchTree) -> list[float | None]:
        """Per node of a search tree, the score of its state; one forward per root-to-leaf path scores every
        node on it."""
        paths = [tree.path(leaf) for leaf in tree.nodes if not leaf.children]
        scores: list[float | None] = [None] * len(tree.nodes)
        texts = [[tree.prompt, *(n.text for n in path[1:])] for path in paths]
        for path, values in zip(paths, self.score_paths(texts)):
            for node, value in zip(path, values):
                scores[node.id] = value
        return scores
