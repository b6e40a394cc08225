"""The lean decode path computes what HF's forward computes, on Llama and Qwen2 (grouped-query) models; the HF
path serves the rest."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

from arbor.actors.search.backend import StepRequest
from arbor.actors.search.decode import KVBuffer, LeanDecoder, supports
from arbor.actors.search.driver import run_searches, training_scorers
from arbor.actors.search.hf_backend import HFStepBackend
from arbor.core.config import ModelConfig, TaskConfig
from arbor.core.model import ValueHead, build_tokenizer
from arbor.core.tasks import build_task
from tests.search_toy import search_cfg

SIZES = dict(vocab_size=64, hidden_size=48, intermediate_size=96, num_hidden_layers=2, max_position_embeddings=128)


def _model(kind: str, heads: int = 4, kv_heads: int = 4, seed: int = 0):
    torch.manual_seed(seed)
    if kind == "llama":
        model = LlamaForCausalLM(LlamaConfig(**SIZES, num_attention_heads=heads, num_key_value_heads=kv_heads))
    else:  # Qwen2: biased q/k/v projections
        model = Qwen2ForCausalLM(Qwen2Config(**SIZES, num_attention_heads=heads, num_key_value_heads=kv_heads))
        with torch.no_grad():
            for layer in model.model.layers:
                layer.self_attn.q_proj.bias.normal_(0, 0.5)
                layer.self_attn.k_proj.bias.normal_(0, 0.5)
    return model.eval()


@torch.no_grad()
def _hf_reference(model, prompts: list[list[int]], new: list[list[int]]):
    """Each row's logits and last hidden state at each new token, from one unpadded full forward."""
    out = []
    for p, n in zip(prompts, new):
        res = model(input_ids=torch.tensor([p + n]), output_hidden_states=True)
        out.append((res.logits[0, len(p) :], res.hidden_states[-1][0, len(p) :]))
    return out


@pytest.mark.parametrize("kind,heads,kv_heads", [("llama", 4, 4), ("llama", 6, 2), ("qwen2", 4, 2)])
def test_lean_steps_equal_hf_forward_on_ragged_left_padded_rows(kind, heads, kv_heads):
    model = _model(kind, heads, kv_heads)
    torch.manual_seed(1)
    prompts = [torch.randint(0, 64, (n,)).tolist() for n in (9, 3, 14)]  # ragged: rows 0 and 1 are left-padded
    new = [torch.randint(0, 64, (5,)).tolist() for _ in prompts]
    with torch.no_grad():
        prefixes = []
        for p in prompts:  # each prompt's KV from HF itself, as the backend's prefix cache holds it
            cache = model(input_ids=torch.tensor([p]), use_cache=True).cache
            prefixes.append(([layer.keys[0] for layer in cache.layers], [layer.values[0] for layer in cache.layers]))
    # two rows continue prompt 0 (one token stream each, the same one), one row each for the others
    counts = [2, 1, 1]
    rows_prompt = [0, 0, 1, 2]
    buffer = KVBuffer.from_prefixes([prefixes[0], prefixes[1], prefixes[2]], counts, extra=5)
    assert buffer.keys[0].shape == (4, kv_heads, 14 + 5, 48 // heads) and buffer.length == 14
    decoder = LeanDecoder(model)
    positions = torch.tensor([len(prompts[p]) for p in rows_prompt])
    got_logits, got_hidden = [], []
    for t in range(5):
        tokens = torch.tensor([new[p][t] for p in rows_prompt])
        logits, hidden = decoder.step(tokens, positions + t, buffer)
        got_logits.append(logits)
        got_hidden.append(hidden)
    reference = _hf_reference(model, prompts, new)
    for r, p in enumerate(rows_prompt):
        ref_logits, ref_hidden = reference[p]
        assert torch.stack([g[r] for g in got_logits]) == pytest.approx(ref_logits, abs=1e-5)
        assert torch.stack([g[r] for g in got_hidden]) == pytest.approx(ref_hidden, abs=1e-5)
    # the columns written are the new tokens' keys: what a full forward's cache holds there
    with torch.no_grad():
        full = model(input_ids=torch.tensor([prompts[1] + new[1]]), use_cache=True).cache
    added_keys, _ = buffer.added(2, 14)
    assert added_keys[1] == pytest.approx(full.layers[1].keys[0, :, len(prompts[1]) :], abs=1e-5)


def test_selecting_rows_keeps_their_state():
    model = _model("llama")
    torch.manual_seed(2)
    prompts = [torch.randint(0, 64, (n,)).tolist() for n in (6, 10)]
    with torch.no_grad():
        prefixes = []
        for p in prompts:
            cache = model(input_ids=torch.tensor([p]), use_cache=True).cache
            prefixes.append(([layer.keys[0] for layer in cache.layers], [layer.values[0] for layer in cache.layers]))
    buffer = KVBuffer.from_prefixes(prefixes, [1, 1], extra=3)
    decoder = LeanDecoder(model)
    decoder.step(torch.tensor([5, 7]), torch.tensor([6, 10]), buffer)
    buffer.select(torch.tensor([1]))  # row 0 finished: only prompt 1's row goes on
    logits, _ = decoder.step(torch.tensor([9]), torch.tensor([11]), buffer)
    ref = _hf_reference(model, [prompts[1]], [[7, 9]])[0][0]
    assert logits[0] == pytest.approx(ref[1], abs=1e-5)


def test_full_buffer_and_unsupported_models_are_refused_by_name():
    model = _model("llama")
    with torch.no_grad():
        cache = model(input_ids=torch.tensor([[1, 2, 3]]), use_cache=True).cache
    prefix = ([layer.keys[0] for layer in cache.layers], [layer.values[0] for layer in cache.layers])
    buffer = KVBuffer.from_prefixes([prefix], [1], extra=1)
    decoder = LeanDecoder(model)
    decoder.step(torch.tensor([4]), torch.tensor([3]), buffer)
    with pytest.raises(RuntimeError, match="KV buffer full"):
        decoder.step(torch.tensor([5]), torch.tensor([4]), buffer)

    gpt2 = GPT2LMHeadModel(GPT2Config(vocab_size=64, n_embd=32, n_layer=1, n_head=2))
    assert not supports(gpt2)
    with pytest.raises(ValueError, match="model_type='gpt2'"):
        LeanDecoder(gpt2)
    windowed = Qwen2ForCausalLM(
        Qwen2Config(
            **SIZES,
            num_attention_heads=4,
            num_key_value_heads=4,
            use_sliding_window=True,
            sliding_window=8,
            max_window_layers=0,
        )
    )
    assert not supports(windowed)
    assert HFStepBackend(gpt2, build_tokenizer(ModelConfig())).lean is None  # the backend keeps HF's forward


def test_backend_search_is_the_same_with_and_without_the_lean_path():
    tokenizer = build_tokenizer(ModelConfig())
    torch.manual_seed(0)
    config = LlamaConfig(**{**SIZES, "vocab_size": len(tokenizer)}, num_attention_heads=4, num_key_value_heads=2)
    model = LlamaForCausalLM(config).eval()
    head = ValueHead(48)
    with torch.no_grad():
        head.proj.weight.normal_(0, 0.3)
    problems = build_task(TaskConfig(eval_size=3)).eval_problems()
    cfg = search_cfg(simulations=5, children=3, leaves_per_round=2, max_step_tokens=10, max_response_tokens=30)
    cfg = dataclasses.replace(cfg, temperature=0.0, mcts=dataclasses.replace(cfg.mcts, temperature=0.0))
    runs = {}
    for lean in (True, False):
        backend = HFStepBackend(model, tokenizer, head, seed=3, lean_decode=lean)
        assert (backend.lean is not None) == lean
        runs[lean] = (run_searches(backend, problems, cfg, training_scorers), backend)
    (lean_trees, lean_backend), (hf_trees, hf_backend) = runs[True], runs[False]
    for a, b in zip(lean_trees, hf_trees):
        assert [n.token_ids for n in a.nodes] == [n.token_ids for n in b.nodes]
        assert [lp for n in a.nodes for lp in n.logprobs] == pytest.approx(
            [lp for n in b.nodes for lp in n.logprobs], abs=1e-4
        )
        assert [n.value_estimate for n in a.nodes] == pytest.approx([n.value_estimate for n in b.nodes], abs=1e-5)
    assert lean_backend.tokens_forwarded == hf_backend.tokens_forwarded
    assert lean_backend.model_calls == hf_backend.model_calls
    # the cached KV of a step equals HF's: continuing from it gives HF's next-step log-probs
    root = (tuple(lean_backend.encode(problems[0].prompt)),)
    for backend in (lean_backend, hf_backend):
        backend.reseed(7)
    steps = [b.continue_steps([StepRequest(root, 3, 10, temperature=1.0)])[0].steps for b in (lean_backend, hf_backend)]
    assert [s.token_ids for s in steps[0]] == [s.token_ids for s in steps[1]]
