"""The lean decode path computes what HF's forward computes, on Llama and Qwen2 (grouped-query) models; the HF
path serves the rest."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

from arbor.actors.search.backend import StepRequest
from arbor.actors.search.decode import HFBatch, KVBuffer, LeanBatch, LeanDecoder, supports
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
                layer.self_attn.v_proj.bias.normal_(0, 0.5)
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
    added_keys, _ = buffer.added(2)
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


def _prefix_kv(model, prompt: list[int]):
    with torch.no_grad():
        cache = model(input_ids=torch.tensor([prompt]), use_cache=True).cache
    return [layer.keys[0] for layer in cache.layers], [layer.values[0] for layer in cache.layers]


@pytest.mark.parametrize("kind", ["llama", "qwen2"])
def test_lean_and_hf_batches_agree_through_selects_on_ragged_rows(kind):
    """The two paths behind the backend, fed the same ragged prefixes (one with no rows), the same tokens and
    the same row selections, padded rows leaving mid-run: the same logits, hidden states and added KV."""
    model = _model(kind, heads=4, kv_heads=2)
    torch.manual_seed(3)
    prompts = [torch.randint(0, 64, (n,)).tolist() for n in (4, 11, 7)]
    prefixes = [_prefix_kv(model, p) for p in prompts]
    counts = [2, 0, 3]  # rows 0-1 continue prompt 0, rows 2-4 prompt 2; prompt 1 only sets the width
    lean = LeanBatch(LeanDecoder(model), prefixes, counts, extra=6)
    hf = HFBatch(model, prefixes, counts)
    rows = [0, 0, 2, 2, 2]  # each row's prompt, in batch order
    positions = torch.tensor([len(prompts[p]) for p in rows])
    keep_after = {1: [0, 2, 3, 4], 3: [1, 3]}  # after step 1 row 1 leaves; after step 3 two more
    with torch.no_grad():
        for t in range(5):
            tokens = torch.randint(0, 64, (len(rows),))
            (lean_logits, lean_hidden), (hf_logits, hf_hidden) = (b.step(tokens, positions) for b in (lean, hf))
            assert lean_logits == pytest.approx(hf_logits, abs=1e-5)
            assert lean_hidden == pytest.approx(hf_hidden, abs=1e-5)
            positions = positions + 1
            if t in keep_after:
                keep = torch.tensor(keep_after[t])
                for b in (lean, hf):
                    b.select(keep)
                rows, positions = [rows[i] for i in keep_after[t]], positions[keep]
    for row in range(len(rows)):  # what the backend stores as each finished step's KV
        (lean_keys, lean_values), (hf_keys, hf_values) = lean.added(row), hf.added(row)
        assert lean_keys[1].shape == hf_keys[1].shape == (2, 5, 12)
        assert lean_keys[1] == pytest.approx(hf_keys[1], abs=1e-5)
        assert lean_values[0] == pytest.approx(hf_values[0], abs=1e-5)


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
    # the KV a decode step cached is what the next step reads: continuing a depth-1 node on each path from its
    # own cache gives the same steps and log-probs (the prompt's entry was released with its tree, the step's
    # is re-made here by one more call)
    root = (tuple(lean_backend.encode(problems[0].prompt)),)
    results = []
    for backend in (lean_backend, hf_backend):
        backend.reseed(7)
        first = backend.continue_steps([StepRequest(root, 2, 10, temperature=1.0)])[0].steps[0]
        child = root + (tuple(first.token_ids),)
        results.append(backend.continue_steps([StepRequest(child, 3, 10, temperature=1.0)])[0].steps)
    lean_steps, hf_steps = results
    assert [s.token_ids for s in lean_steps] == [s.token_ids for s in hf_steps]
    for a, b in zip(lean_steps, hf_steps):
        assert a.logprobs == pytest.approx(b.logprobs, abs=1e-4)
        assert a.value == pytest.approx(b.value, abs=1e-5)
    for backend in (lean_backend, hf_backend):  # a zero-token limit still samples (and forwards) one token
        assert [len(s.token_ids) for s in backend.continue_steps([StepRequest(root, 2, 0)])[0].steps] == [1, 1]
