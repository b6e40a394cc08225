"""One-token decode steps over a batch of rows' cached KV: a lean path for Llama and Qwen2, HF's for the rest.

The search decodes one token per row per model call, a few to a few hundred rows at a time. On CPU HF's
forward spends most of such a call outside the model's arithmetic: ``DynamicCache.update`` concatenates
every layer's whole cache with the new token (reading and writing all of it each token), and the fused
attention kernel is built for long queries, not one.

:class:`LeanBatch` (``search.lean_decode``, where :func:`supports` says yes) puts the rows' past once into
a buffer with room for every token the call may add; each step writes its token's keys and values into the
next column, and attention is two batched matrix products over the filled columns, softmax in float32 as
HF's eager attention does. The model's own modules compute everything else (embedding, norms, projections
with their biases, rotary embedding, MLP, output head), so a weight update through ``load_state_dict``
reaches it at once, and its outputs equal HF's forward up to float rounding (``tests/unit/actors/
test_decode.py``). :class:`HFBatch` is HF's forward over a ``DynamicCache``, for every other model.

Both take rows grouped by prefix, each prefix's keys and values per layer [H_kv, L, D] right-aligned at the
common width, and offer ``step`` (forward one token per row), ``select`` (keep some rows) and ``added`` (the
keys and values a row added after its prefix). What the lean path is worth: ``bench/actor_throughput.py``.
"""

from __future__ import annotations

import sys

import torch
from transformers import DynamicCache, PreTrainedModel

from arbor.core.model import forward_with_hidden

ARCHITECTURES = ("llama", "qwen2")  # model_type values whose decoder layer this module reproduces


def supports(model: PreTrainedModel) -> bool:
    """Whether :class:`LeanDecoder` computes ``model``'s forward: a Llama or Qwen2 causal LM with full
    attention in every layer."""
    if getattr(model.config, "model_type", None) not in ARCHITECTURES:
        return False
    layers = getattr(getattr(model, "model", None), "layers", None)
    if not layers:
        return False
    return all(getattr(layer.self_attn, "sliding_window", None) is None for layer in layers)


Prefix = tuple[list[torch.Tensor], list[torch.Tensor]]  # per layer keys, values [H_kv, L, D]


class KVBuffer:
    """The keys and values of a batch of rows, per layer [R, H_kv, capacity, D], the first ``length``
    columns filled, the prefixes in the first ``width``; ``bias`` [R, 1, 1, capacity] is 0 where a row attends
    and the dtype's minimum where a column is left padding."""

    def __init__(self, keys: list[torch.Tensor], values: list[torch.Tensor], bias: torch.Tensor, width: int):
        self.keys, self.values, self.bias = keys, values, bias
        self.width = self.length = width

    @classmethod
    def from_prefixes(cls, prefixes: list[Prefix], counts: list[int], extra: int) -> KVBuffer:
        """``counts[p]`` consecutive rows per prefix (per layer keys, values [H_kv, L_p, D]), each prefix
        right-aligned at the common width, with ``extra`` free columns after it for the tokens to come."""
        first = prefixes[0][0][0]
        lengths = [k[0].shape[1] for k, _ in prefixes]
        width = max(lengths)
        shape = (sum(counts), first.shape[0], width + extra, first.shape[2])
        # Uninitialised: the free columns are written before they are read, and only the left padding, which
        # attention reads at weight 0, is zeroed (0 * garbage could be NaN).
        keys = [first.new_empty(shape) for _ in prefixes[0][0]]
        values = [first.new_empty(shape) for _ in prefixes[0][0]]
        bias = first.new_zeros(shape[0], 1, 1, width + extra)
        row = 0
        for (prefix_keys, prefix_values), n, length in zip(prefixes, counts, lengths):
            if n:
                for out, part in ((keys, prefix_keys), (values, prefix_values)):
                    for layer, t in zip(out, part):
                        layer[row : row + n, :, : width - length] = 0
                        layer[row : row + n, :, width - length : width] = t  # broadcast over the n rows
                bias[row : row + n, ..., : width - length] = torch.finfo(first.dtype).min
            row += n
        return cls(keys, values, bias, width)

    def select(self, rows: torch.Tensor) -> None:
        """Keep only ``rows`` (indices into the current batch), in that order."""
        self.keys = [self._kept(k, rows) for k in self.keys]
        self.values = [self._kept(v, rows) for v in self.values]
        self.bias = self.bias[rows]

    def _kept(self, t: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        out = t.new_empty(len(rows), *t.shape[1:])
        torch.index_select(t[:, :, : self.length], 0, rows, out=out[:, :, : self.length])  # the free columns stay free
        return out

    def added(self, row: int) -> Prefix:
        """Copies of the keys and values one row added after its prefix, per layer [H_kv, length - width, D]."""
        return (
            [k[row, :, self.width : self.length].clone() for k in self.keys],
            [v[row, :, self.width : self.length].clone() for v in self.values],
        )


class LeanDecoder:
    """Forwards one token per row through a supported model (:func:`supports`), reading and extending a
    :class:`KVBuffer`."""

    def __init__(self, model: PreTrainedModel):
        if not supports(model):
            raise ValueError(
                f"lean decoding covers {', '.join(ARCHITECTURES)} models with full attention; "
                f"got model_type={getattr(model.config, 'model_type', None)!r}"
            )
        self.model = model
        self.base = model.model
        first = self.base.layers[0].self_attn
        self.head_dim = first.head_dim
        self.scaling = first.scaling
        # the rotary helper of the model's own modelling file (Llama's and Qwen2's are the same function)
        self.rotate = sys.modules[type(first).__module__].apply_rotary_pos_emb

    @torch.no_grad()
    def step(
        self, tokens: torch.Tensor, positions: torch.Tensor, buffer: KVBuffer
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Forward ``tokens`` [R] at ``positions`` [R]; write their keys and values at column
        ``buffer.length`` and advance it. Returns (logits [R, V], final hidden state [R, E])."""
        column = buffer.length
        if column >= buffer.keys[0].shape[2]:
            raise RuntimeError(f"KV buffer full: {buffer.keys[0].shape[2]} columns, no room for one more token")
        rows = tokens.shape[0]
        x = self.base.embed_tokens(tokens[:, None])  # [R, 1, E]
        cos, sin = self.base.rotary_emb(x, positions[:, None])  # [R, 1, D]
        bias = buffer.bias[..., : column + 1]  # [R, 1, 1, T]
        for i, layer in enumerate(self.base.layers):
            attn = layer.self_attn
            h = layer.input_layernorm(x)
            q = attn.q_proj(h).view(rows, 1, -1, self.head_dim).transpose(1, 2)  # [R, H, 1, D]
            k = attn.k_proj(h).view(rows, 1, -1, self.head_dim).transpose(1, 2)  # [R, H_kv, 1, D]
            v = attn.v_proj(h).view(rows, 1, -1, self.head_dim).transpose(1, 2)
            q, k = self.rotate(q, k, cos, sin)
            keys, values = buffer.keys[i], buffer.values[i]
            keys[:, :, column] = k[:, :, 0]
            values[:, :, column] = v[:, :, 0]
            kv_heads = keys.shape[1]
            # grouped-query attention without repeating keys: each key head serves its group of query heads
            q = q.reshape(rows, kv_heads, -1, self.head_dim)  # [R, H_kv, G, D]
            scores = torch.matmul(q, keys[:, :, : column + 1].transpose(-1, -2)) * self.scaling + bias  # [R,H_kv,G,T]
            weights = torch.softmax(scores, dim=-1, dtype=torch.float32).to(q.dtype)
            out = torch.matmul(weights, values[:, :, : column + 1])  # [R, H_kv, G, D]
            x = x + attn.o_proj(out.reshape(rows, 1, -1))
            x = x + layer.mlp(layer.post_attention_layernorm(x))
        buffer.length = column + 1
        hidden = self.base.norm(x)[:, 0]  # [R, E]
        return self.model.get_output_embeddings()(hidden), hidden


class LeanBatch:
    """Rows decoded by :class:`LeanDecoder` over a :class:`KVBuffer`."""

    def __init__(self, decoder: LeanDecoder, prefixes: list[Prefix], counts: list[int], extra: int):
        self.decoder = decoder
        self.buffer = KVBuffer.from_prefixes(prefixes, counts, extra)

    def step(self, tokens: torch.Tensor, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Forward ``tokens`` [A] at ``positions`` [A]: (logits [A, V], final hidden [A, E])."""
        return self.decoder.step(tokens, positions, self.buffer)

    def select(self, rows: torch.Tensor) -> None:
        self.buffer.select(rows)

    def added(self, row: int) -> Prefix:
        return self.buffer.added(row)


class HFBatch:
    """Rows decoded by HF's forward over a ``DynamicCache`` (left padding under a 0 attention mask)."""

    def __init__(self, model: PreTrainedModel, prefixes: list[Prefix], counts: list[int]):
        self.model = model
        lengths = [k[0].shape[1] for k, _ in prefixes]
        self.width = width = max(lengths)
        by_row = torch.tensor([p for p, n in enumerate(counts) for _ in range(n)], device=prefixes[0][0][0].device)
        past = [
            (
                _left_pad([k[i] for k, _ in prefixes], width)[by_row],
                _left_pad([v[i] for _, v in prefixes], width)[by_row],
            )
            for i in range(len(prefixes[0][0]))
        ]  # per layer: keys, values [R, H, W, D]
        self.cache = DynamicCache(ddp_cache_data=past)
        starts = (width - torch.tensor(lengths, device=by_row.device))[by_row]
        self.mask = (torch.arange(width, device=by_row.device)[None, :] >= starts[:, None]).long()  # [R, W]

    def step(self, tokens: torch.Tensor, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self.mask = torch.cat([self.mask, self.mask.new_ones(len(tokens), 1)], dim=1)
        logits, hidden, self.cache = forward_with_hidden(
            self.model, tokens[:, None], self.mask, position_ids=positions[:, None], cache=self.cache, use_cache=True
        )
        return logits[:, -1], hidden[:, -1]

    def select(self, rows: torch.Tensor) -> None:
        self.cache.batch_select_indices(rows)
        self.mask = self.mask[rows]

    def added(self, row: int) -> Prefix:
        layers, w = self.cache.layers, self.width
        return [la.keys[row, :, w:].clone() for la in layers], [la.values[row, :, w:].clone() for la in layers]


def open_batch(
    model: PreTrainedModel, lean: LeanDecoder | None, prefixes: list[Prefix], counts: list[int], extra: int
) -> LeanBatch | HFBatch:
    """``counts[p]`` rows continuing ``prefixes[p]``, each to add at most ``extra`` tokens: on the lean path
    where ``lean`` is given, else on HF's."""
    return LeanBatch(lean, prefixes, counts, extra) if lean is not None else HFBatch(model, prefixes, counts)


def _left_pad(prefixes: list[torch.Tensor], width: int) -> torch.Tensor:
    """Stack per-sequence [H, L_i, D] tensors into [N, H, width, D], zeros on the left (masked out)."""
    first = prefixes[0]
    out = first.new_zeros(len(prefixes), first.shape[0], width, first.shape[2])
    for i, t in enumerate(prefixes):
        out[i, :, width - t.shape[1] :] = t
    return out
