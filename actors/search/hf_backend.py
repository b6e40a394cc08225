"""HF transformers implementation of the step backend, with prefix KV reuse (CPU or GPU).

How one ``continue_steps`` call runs:

1. Prefill: prefixes not in the :class:`PrefixCache` (new prompts, or everything after a weight update)
   are forwarded once, left-padded in one batch, and split into one cache entry per segment.
2. Decode: each sample is a row whose past is its prefix's cached KV (concatenated segments, left-padded
   with zeros under a 0 attention mask). The first token is sampled from the cached next-token logits,
   so a node's prefix is never forwarded again; then every active row forwards only its newest token.
   The step's last token (the separator) is forwarded too, which yields the child's value estimate, the
   logits its own children will start from and its complete KV, stored as a new cache entry.

So every token in a tree is forwarded once: tokens forwarded per generated token is 1 plus the prompt's
share. Finished rows leave the batch. On Llama and Qwen2 models (``search.lean_decode``, the default) the
decode steps run over a preallocated KV buffer (:mod:`actors.search.decode`); otherwise through HF's
forward and ``DynamicCache``; the same outputs either way, up to float rounding.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from arbor.actors.search.backend import Segments, StepOutput, StepRequest, StepResult
from arbor.actors.search.decode import LeanDecoder, open_batch, supports
from arbor.actors.search.distinct import MIN_RESIDUAL, ExclusionTrie, TrieNode
from arbor.actors.search.kv_cache import CacheEntry, PrefixCache, prefix_kv
from arbor.core.config import ArborConfig
from arbor.core.model import ValueHead, forward_with_hidden
from arbor.core.tasks import step_separator
from arbor.core.tasks.base import STEP_SEP


def sample_tokens(
    logits: torch.Tensor,
    temperature: torch.Tensor,
    generator: torch.Generator | None,
    vocab_size: int | None = None,
    bias: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample one token per row and return (tokens [A], behaviour log-probs [A]).

    logits [A, V], temperature [A]: rows with T > 0 sample from softmax(logits / T) and report that
    distribution's log-prob; rows with T = 0 take the argmax and report log softmax(logits). ``bias`` [A, V]
    (log-weights, -inf allowed; sampling without replacement, :mod:`actors.search.distinct`) reweights what is
    drawn, not the log-prob reported; a row it would leave with no mass is drawn without it.
    """
    if vocab_size is not None and vocab_size < logits.shape[-1]:
        logits = logits.clone()
        logits[:, vocab_size:] = float("-inf")  # padded output rows: no token, never sampled
    greedy = temperature <= 0
    scale = torch.where(greedy, torch.ones_like(temperature), temperature)
    logp = torch.log_softmax(logits.float() / scale[:, None], dim=-1)  # [A, V]
    # Inverse-CDF sampling: one uniform per row. torch.multinomial draws work per vocabulary entry, which on
    # a 49k-token vocabulary cost a tenth of a real model's search time on CPU; this is ~10x cheaper. The
    # cumulative sum is float64 so the tail's tokens keep their mass; right=True never lands on a token of
    # probability 0 (its cumulative value equals its predecessor's).
    weights = logp.double().exp()  # [A, V]
    chosen = logits
    if bias is not None:
        biased = weights * bias.double().exp()
        keep = biased.sum(-1, keepdim=True) > 1e-12  # [A, 1]
        weights = torch.where(keep, biased, weights)
        chosen = torch.where(keep, logits.float() + bias.float().nan_to_num(neginf=-1e30), logits.float())
    cdf = weights.cumsum(-1)  # [A, V]
    u = torch.rand(cdf.shape[0], 1, generator=generator, dtype=cdf.dtype, device=cdf.device) * cdf[:, -1:]
    drawn = torch.searchsorted(cdf, u, right=True).squeeze(-1).clamp_(max=cdf.shape[-1] - 1)  # [A]
    tokens = torch.where(greedy, chosen.argmax(-1), drawn)
    return tokens, logp.gather(-1, tokens[:, None]).squeeze(-1)


def separator_seen(tail: str, token_text: str, sep: str) -> tuple[bool, str]:
    """(whether ``sep`` occurs in the text so far once ``token_text`` is appended, the new tail), where
    ``tail`` holds the last ``len(sep) - 1`` characters before it: enough to see a separator that spans
    tokens, without keeping the whole step's text."""
    text = tail + token_text
    return sep in text, text[len(text) - (len(sep) - 1) :] if len(sep) > 1 else ""


@dataclass
class _Row:
    request: int  # index into the chunk's requests
    temperature: float
    max_tokens: int
    tokens: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    finish: str = ""  # set once the last sampled token ends the step
    tail: str = ""  # the step's last characters, for a separator that spans tokens ("\n" then "\n")
    trie: TrieNode | None = None  # distinct requests: where the step so far sits among the known steps


class HFStepBackend:
    """Continues prefixes by one step with a HF causal LM (+ optional value head), reusing prefix KV."""

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        value_head: ValueHead | None = None,
        *,
        policy_version: int = 0,
        seed: int = 0,
        max_batch_rows: int = 256,
        reuse_prefixes: bool = True,
        step_sep: str = STEP_SEP,
        lean_decode: bool = True,
    ):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.value_head = value_head.eval() if value_head is not None else None
        self.cache = PrefixCache(policy_version)
        self.max_batch_rows = max_batch_rows
        self.reuse_prefixes = reuse_prefixes  # False: every call prefills its prefixes anew (the no-reuse baseline)
        self.device = next(model.parameters()).device
        # decode steps over a preallocated KV buffer where the architecture allows (decode.py); else HF's
        self.lean = LeanDecoder(model) if lean_decode and supports(model) else None
        self.generator = torch.Generator(device=self.device).manual_seed(seed)
        texts = tokenizer.batch_decode([[i] for i in range(len(tokenizer))])
        # Models often pad the output layer past the tokenizer (Qwen2: 151936 vs 151665); those ids are
        # never sampled (see _logits) and count as ending nothing.
        width = model.get_output_embeddings().out_features
        ends = [step_sep in t for t in texts] + [False] * max(0, width - len(texts))
        self.step_end = torch.tensor(ends, device=self.device)  # [V] bool
        self.step_sep = step_sep
        self.token_texts = texts
        self.vocab_size = len(tokenizer)
        self.eos_id = tokenizer.eos_token_id
        self.tokens_forwarded = 0  # totals over the backend's life
        self.tokens_generated = 0
        self.model_calls = 0

    @classmethod
    def configured(
        cls,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        value_head: ValueHead | None,
        cfg: ArborConfig,
        *,
        seed: int,
        policy_version: int = 0,
        reuse_prefixes: bool = True,
    ) -> HFStepBackend:
        """The backend as ``cfg`` sets it up: its batch rows, decode path and the task's step separator."""
        return cls(
            model,
            tokenizer,
            value_head,
            policy_version=policy_version,
            seed=seed,
            max_batch_rows=cfg.search.max_batch_rows,
            reuse_prefixes=reuse_prefixes,
            step_sep=step_separator(cfg.task),
            lean_decode=cfg.search.lean_decode,
        )

    @property
    def policy_version(self) -> int:
        return self.cache.version

    def set_policy_version(self, version: int) -> None:
        """Weights changed (loaded by the caller): drop every cached prefix computed with the old ones."""
        self.cache.set_version(version)

    def reseed(self, seed: int) -> None:
        """Restart the token sampler's random stream from ``seed``."""
        self.generator.manual_seed(seed)

    def load_weights(self, version: int, model_state: dict, value_head_state: dict | None = None) -> None:
        """Load new policy (and value head) weights tagged ``version``; the prefix cache is dropped."""
        self.model.load_state_dict(model_state)
        if value_head_state is not None and self.value_head is not None:
            self.value_head.load_state_dict(value_head_state)
        self.set_policy_version(version)

    def encode(self, text: str) -> list[int]:
        return list(self.tokenizer.encode(text, add_special_tokens=False))

    def release(self, prompt: tuple[int, ...]) -> None:
        self.cache.release(prompt)

    @torch.no_grad()
    def continue_steps(self, requests: Sequence[StepRequest]) -> list[StepResult]:
        if not self.reuse_prefixes:
            self.cache.clear()
        results = [StepResult(prefix_value=None, policy_version=self.policy_version) for _ in requests]
        chunk: list[int] = []
        rows = 0
        for i, req in enumerate(requests):
            if chunk and rows + max(1, req.num_samples) > self.max_batch_rows:
                self._run([requests[j] for j in chunk], [results[j] for j in chunk])
                chunk, rows = [], 0
            chunk.append(i)
            rows += max(1, req.num_samples)
        if chunk:
            self._run([requests[j] for j in chunk], [results[j] for j in chunk])
        for r in results:
            self.tokens_forwarded += r.tokens_forwarded
            self.tokens_generated += r.tokens_generated
        return results

    def _run(self, requests: list[StepRequest], results: list[StepResult]) -> None:
        self._prefill(requests, results)
        for req, res in zip(requests, results):
            res.prefix_value = self.cache.lookup(req.segments)[-1].value
        if not any(r.distinct and r.num_samples for r in requests):
            if any(r.num_samples for r in requests):
                self._decode(requests, results)
            return
        # Distinct requests draw one sample a round, each conditioned on every step known so far (batched ones
        # draw all they still need, and a draw that repeats another of its round is drawn again next round);
        # plain requests of the chunk sample all of theirs in the first round.
        tries = [ExclusionTrie(r.exclude) if r.distinct else None for r in requests]
        known = [{s for s, _ in r.exclude} if r.distinct_batched else None for r in requests]  # to spot twins
        left = [r.num_samples for r in requests]
        while True:
            wave = [
                i for i, r in enumerate(requests) if left[i] and (not r.distinct or tries[i].residual() > MIN_RESIDUAL)
            ]
            if not wave:
                return
            drawn = [len(results[i].steps) for i in wave]
            self._decode(
                [self._wave_request(requests[i], left[i]) for i in wave],
                [results[i] for i in wave],
                [tries[i] for i in wave],
            )
            for i, first in zip(wave, drawn):
                if not requests[i].distinct:
                    left[i] = 0
                    continue
                kept = []
                for step in results[i].steps[first:]:
                    if known[i] is not None:
                        if tuple(step.token_ids) in known[i]:
                            continue  # a twin of a step drawn beside it: its tokens are spent, the draw is repeated
                        known[i].add(tuple(step.token_ids))
                    tries[i].add(step.token_ids, step.logprobs)
                    kept.append(step)
                results[i].steps[first:] = kept
                left[i] -= max(1, len(kept))  # at most num_samples rounds, whatever repeats

    @staticmethod
    def _wave_request(request: StepRequest, left: int) -> StepRequest:
        """What one round of ``_run`` asks of ``request``: all its samples (plain), the ``left`` it still
        needs (distinct, batched) or one (distinct)."""
        if not request.distinct:
            return request
        return replace(request, num_samples=left if request.distinct_batched else 1)

    def _forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, position_ids: torch.Tensor):
        """One prefill pass: (logits [B,T,V], values [B,T] or None, cache)."""
        self.model_calls += 1
        logits, hidden, cache = forward_with_hidden(
            self.model, input_ids, attention_mask, position_ids=position_ids, use_cache=True
        )
        values = self.value_head(hidden) if self.value_head is not None else None
        return logits, values, cache

    def _prefill(self, requests: list[StepRequest], results: list[StepResult]) -> None:
        """Forward every distinct uncached prefix once and cache each of its segments."""
        missing: dict[Segments, int] = {}  # prefix -> first request that needs it (it pays the tokens)
        for i, req in enumerate(requests):
            if len(self.cache.lookup(req.segments)) < len(req.segments):
                missing.setdefault(req.segments, i)
        if not missing:
            return
        prefixes = list(missing)
        flat = [[t for seg in p for t in seg] for p in prefixes]
        width = max(len(f) for f in flat)
        pad = self.tokenizer.pad_token_id or 0
        ids = torch.tensor([[pad] * (width - len(f)) + f for f in flat], device=self.device)  # [P, W]
        mask = torch.tensor([[0] * (width - len(f)) + [1] * len(f) for f in flat], device=self.device)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        logits, values, cache = self._forward(ids, mask, positions)
        for p, (segments, f) in enumerate(zip(prefixes, flat)):
            owner = results[missing[segments]]
            owner.tokens_forwarded += len(f)
            owner.model_calls += 1
            end = width - len(f)
            for j, seg in enumerate(segments):
                start, end = end, end + len(seg)
                entry = CacheEntry(
                    keys=[layer.keys[p, :, start:end].clone() for layer in cache.layers],
                    values=[layer.values[p, :, start:end].clone() for layer in cache.layers],
                    next_logits=logits[p, end - 1].clone(),
                    value=float(values[p, end - 1]) if values is not None else None,
                    version=self.policy_version,
                )
                self.cache.insert(segments[: j + 1], entry)

    def _decode(
        self, requests: list[StepRequest], results: list[StepResult], tries: list[ExclusionTrie | None] | None = None
    ) -> None:
        """Sample every request's steps as rows of one batch, forwarding only new tokens; a request with a
        trie draws from the policy conditioned on not repeating the trie's steps."""
        tries = tries or [None] * len(requests)
        rows = [
            _Row(i, r.temperature, r.max_tokens, trie=tries[i].root if tries[i] and tries[i].root.children else None)
            for i, r in enumerate(requests)
            for _ in range(r.num_samples)
        ]
        if not rows:  # every request only evaluates its prefix
            return
        entries = [self.cache.lookup(r.segments) for r in requests]
        kv = [prefix_kv(e) for e in entries]  # per request: per-layer keys, values [H, L_r, D]
        lengths = torch.tensor([kv[r.request][0][0].shape[1] for r in rows], device=self.device)  # [R] prefix tokens
        # rows are grouped by request, in request order; room for every token a row may add (the first is always
        # sampled and forwarded, even at max_tokens 0)
        batch = open_batch(
            self.model, self.lean, kv, [r.num_samples for r in requests], max(1, *(r.max_tokens for r in rows))
        )
        temps = torch.tensor([r.temperature for r in rows], device=self.device)
        first = torch.stack([entries[r.request][-1].next_logits for r in rows])  # [R, V]
        everyone = list(range(len(rows)))
        self._take(
            rows,
            everyone,
            *sample_tokens(first, temps, self.generator, self.vocab_size, self._bias(rows, everyone, first)),
        )

        active = list(range(len(rows)))  # rows still in the batch, in batch order
        positions = lengths.clone()
        outputs: dict[int, StepOutput] = {}
        while active:
            last = torch.tensor([rows[i].tokens[-1] for i in active], device=self.device)  # [A]
            self.model_calls += 1
            logits, hidden = batch.step(last, positions[active])  # [A, V], [A, E]
            values = self.value_head(hidden) if self.value_head is not None else None  # [A]
            positions[active] += 1
            for r in {rows[i].request for i in active}:
                results[r].model_calls += 1
            going = [b for b, i in enumerate(active) if not rows[i].finish]
            for b, i in enumerate(active):
                if rows[i].finish:
                    value = float(values[b]) if values is not None else None
                    keys, vals = batch.added(b)
                    outputs[i] = self._finish(requests[rows[i].request], rows[i], keys, vals, logits[b], value)
            if going:
                sel = torch.tensor(going, device=self.device)
                which = [active[b] for b in going]
                step_logits = logits[sel]
                tokens, logp = sample_tokens(
                    step_logits, temps[which], self.generator, self.vocab_size, self._bias(rows, which, step_logits)
                )
                self._take(rows, which, tokens, logp)
                if len(going) < len(active):
                    batch.select(sel)
            active = [active[b] for b in going]
        for i, row in enumerate(rows):  # outputs in sampling order, whatever order the rows finished in
            res = results[row.request]
            res.steps.append(outputs[i])
            res.tokens_forwarded += len(row.tokens)
            res.tokens_generated += len(row.tokens)

    def _take(self, rows: list[_Row], which: list[int], tokens: torch.Tensor, logp: torch.Tensor) -> None:
        """Append one sampled token to each of ``which`` rows and mark rows whose step just ended."""
        ends = self.step_end[tokens].tolist()
        for i, tok, lp, end in zip(which, tokens.tolist(), logp.tolist(), ends):
            row = rows[i]
            row.tokens.append(tok)
            row.logprobs.append(lp)
            if row.trie is not None:  # still on a known step's prefix, or off every one from here on
                row.trie = row.trie.children.get(tok)
            if tok == self.eos_id:
                row.finish = "eos"
            elif end or self._separator_spans_tokens(row, tok):
                row.finish = "step"
            elif len(row.tokens) >= row.max_tokens:
                row.finish = "length"

    def _bias(self, rows: list[_Row], which: list[int], logits: torch.Tensor) -> torch.Tensor | None:
        """Log-weights [len(which), V] that keep rows on a known step's prefix from completing a known step;
        None when no row is on one."""
        on = [(b, rows[i].trie) for b, i in enumerate(which) if rows[i].trie is not None]
        if not on:
            return None
        bias = torch.zeros(len(which), logits.shape[-1], device=logits.device)
        for b, node in on:
            for tok, w in ExclusionTrie.bias(node).items():
                bias[b, tok] = w
        return bias

    def _separator_spans_tokens(self, row: _Row, token: int) -> bool:
        """Whether a multi-character separator ends with ``token`` across token boundaries (a character
        tokenizer writes "\n\n" as two tokens); single-token separators are caught by ``step_end``."""
        if len(self.step_sep) == 1 or token >= len(self.token_texts):
            return False
        ended, row.tail = separator_seen(row.tail, self.token_texts[token], self.step_sep)
        return ended

    def _finish(
        self,
        request: StepRequest,
        row: _Row,
        keys: list[torch.Tensor],
        values: list[torch.Tensor],
        next_logits: torch.Tensor,
        value: float | None,
    ) -> StepOutput:
        """A finished row (its step's last token just forwarded, so its KV is complete): cache it, describe it."""
        entry = CacheEntry(
            keys=keys,  # per layer [H, len(step), D]
            values=values,
            next_logits=next_logits.clone(),
            value=value,
            version=self.policy_version,
        )
        self.cache.insert(request.segments + (tuple(row.tokens),), entry)
        text = self.tokenizer.decode(row.tokens, skip_special_tokens=True)
        return StepOutput(list(row.tokens), list(row.logprobs), text, row.finish, value)
