"""Model factory, value head and checkpoints: plain transformers reloads and generates from them."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from arbor.core.config import ModelConfig, load_config
from arbor.core.errors import ModelLoadError
from arbor.core.flops import train_flops_per_token
from arbor.core.model import (
    ValueHead,
    build_policy,
    forward_with_hidden,
    hidden_size_of,
    load_value_head,
    save_checkpoint,
)
from tests.conftest import DEFAULT_CONFIG

SMALL = ModelConfig(hidden_size=64, num_layers=2, num_heads=4, intermediate_size=128, max_seq_len=64)


def test_default_model_is_1_to_5_million_parameters():
    model, tok = build_policy(load_config(DEFAULT_CONFIG).model)
    n = sum(p.numel() for p in model.parameters())
    assert 1e6 <= n <= 5e6
    assert model.config.vocab_size == len(tok)


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_checkpoint_reloads_in_plain_transformers_and_generates(tmp_path: Path, arch: str):
    cfg = ModelConfig(**{**SMALL.__dict__, "arch": arch})
    model, tok = build_policy(cfg)
    head = ValueHead(hidden_size_of(model))
    with torch.no_grad():
        head.proj.weight.normal_()
    save_checkpoint(tmp_path, model, tok, value_head=head, meta={"version": 3})
    assert (tmp_path / "model.safetensors").is_file()

    again = AutoModelForCausalLM.from_pretrained(tmp_path)
    tok2 = AutoTokenizer.from_pretrained(tmp_path)
    ids = tok2(["Use 1 2 3 to make 9.\n"], return_tensors="pt", add_special_tokens=False)
    with torch.no_grad():
        assert torch.allclose(model(**ids).logits, again(**ids).logits, atol=1e-6)
    out = again.generate(**ids, max_new_tokens=5, do_sample=False, pad_token_id=tok2.pad_token_id)
    assert out.shape == (1, ids["input_ids"].shape[1] + 5)
    assert isinstance(tok2.decode(out[0]), str)

    head2 = load_value_head(tmp_path, again)
    assert head2 is not None and torch.equal(head2.proj.weight, head.proj.weight)


def test_model_path_loads_a_local_checkpoint(tmp_path: Path):
    model, tok = build_policy(SMALL)
    save_checkpoint(tmp_path, model, tok)
    loaded, tok2 = build_policy(ModelConfig(path=str(tmp_path)))
    assert sum(p.numel() for p in loaded.parameters()) == sum(p.numel() for p in model.parameters())
    assert len(tok2) == len(tok)
    assert load_value_head(tmp_path, loaded) is None


def test_missing_or_invalid_model_dir_is_named(tmp_path: Path):
    with pytest.raises(ModelLoadError, match="not found"):
        build_policy(ModelConfig(path=str(tmp_path / "missing")))
    with pytest.raises(ModelLoadError, match="config.json"):
        build_policy(ModelConfig(path=str(tmp_path)))


def test_value_head_reads_the_lm_head_hidden_state():
    model, tok = build_policy(SMALL)
    ids = torch.tensor([[5, 6, 7, 8]])
    logits, hidden, _ = forward_with_hidden(model, ids)
    assert torch.allclose(logits, model(input_ids=ids).logits, atol=1e-6)
    values = ValueHead(hidden_size_of(model))(hidden)
    assert values.shape == (1, 4)
    assert torch.allclose(values, torch.full((1, 4), 0.5))  # zero-initialised: no preference


def test_train_flops_counts_every_matmul():
    model, _ = build_policy(SMALL)
    linear = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))
    assert train_flops_per_token(model, 10) == 6 * linear + 12 * 2 * 64 * 10
