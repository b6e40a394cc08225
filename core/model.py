"""Policy model and tokenizer factory, the scalar value head, and HF-format checkpoints.

The default policy is a small Llama- or Qwen2-style causal LM built from config with Arbor's character
tokenizer; ``model.path=DIR`` loads any local Hugging Face causal LM and its tokenizer instead, and
``model.path=FILE.gguf`` a GGUF file, converted once to such a directory (``arbor.core.gguf``), and
``model.path=package:NAME/FILE`` a model file shipped in an installed package (``arbor.core.pretrained``). Weights are
held in ``model.dtype``; the value head always computes in float32.
Checkpoints are ``save_pretrained`` directories (safetensors) that plain
``AutoModelForCausalLM.from_pretrained`` loads; the value head sits beside them in its own file.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    LlamaConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    Qwen2Config,
)

from arbor.core.config import ModelConfig
from arbor.core.errors import ModelLoadError
from arbor.core.gguf import converted_dir, is_gguf
from arbor.core.pretrained import resolve_model_path
from arbor.core.tokenizer import build_char_tokenizer

VALUE_HEAD_FILE = "value_head.safetensors"
ARBOR_META_FILE = "arbor.json"


def torch_dtype(name: str) -> torch.dtype:
    """The torch dtype ``model.dtype`` names (float32 | bfloat16 | float16)."""
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[str(name)]


def build_tiny_model(cfg: ModelConfig, tokenizer: PreTrainedTokenizerBase) -> PreTrainedModel:
    """A freshly initialised small causal LM shaped by ``cfg`` over ``tokenizer``'s vocabulary."""
    common = dict(
        vocab_size=len(tokenizer),
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        num_key_value_heads=cfg.num_heads,
        max_position_embeddings=cfg.max_seq_len,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=False,
    )
    config = LlamaConfig(**common) if cfg.arch == "llama" else Qwen2Config(**common)
    torch.manual_seed(cfg.init_seed)
    model = AutoModelForCausalLM.from_config(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    return model.to(torch_dtype(cfg.dtype))


def load_pretrained(path: str | Path, dtype: str = "float32") -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a local HF causal LM directory (or GGUF file) and its tokenizer, weights in ``dtype``; never
    reaches a hub."""
    path = model_dir(path)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # the "Loading weights" bar, once per actor, buries the run's own output
    tokenizer = _load_tokenizer(path)
    try:
        model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True, dtype=torch_dtype(dtype))
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"model.path: cannot load {path}: {exc}") from None
    return model, tokenizer


def model_dir(path: str | Path) -> Path:
    """The HF directory ``model.path`` names: the directory itself, or a GGUF file's converted directory.
    ModelLoadError names what is missing or unreadable."""
    path = resolve_model_path(path)
    if is_gguf(path):
        return converted_dir(path)
    if not path.is_dir():
        raise ModelLoadError(f"model.path: directory not found: {path}")
    if not (path / "config.json").is_file():
        raise ModelLoadError(f"model.path: {path} has no config.json, so it is not a Hugging Face checkpoint")
    return path


def _load_tokenizer(path: Path) -> PreTrainedTokenizerBase:
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"model.path: cannot load {path}: {exc}") from None
    if tokenizer.pad_token_id is None:  # many LMs ship without one; generation batches need it
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    return tokenizer


def build_policy(cfg: ModelConfig) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """The policy named by ``cfg``: loaded from ``cfg.path`` or built tiny from scratch."""
    if cfg.path:
        return load_pretrained(cfg.path, cfg.dtype)
    tokenizer = build_char_tokenizer()
    return build_tiny_model(cfg, tokenizer), tokenizer


def build_tokenizer(cfg: ModelConfig) -> PreTrainedTokenizerBase:
    """The tokenizer :func:`build_policy` would return, without loading or building the model."""
    return _load_tokenizer(model_dir(cfg.path)) if cfg.path else build_char_tokenizer()


class ValueHead(nn.Module):
    """Scalar value V(s) read off a causal LM's final hidden state at each position."""

    def __init__(self, hidden_size: int):
        super().__init__()
        self.proj = nn.Linear(hidden_size, 1)
        nn.init.zeros_(self.proj.weight)  # start at V = 0.5 after the sigmoid: no preference
        nn.init.zeros_(self.proj.bias)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        # hidden: [B, T, H] -> values in (0, 1): [B, T]; outcomes are 0/1 so a sigmoid keeps V a probability
        # (in the head's own precision, float32, whatever the trunk's dtype)
        return torch.sigmoid(self.proj(hidden.to(self.proj.weight.dtype)).squeeze(-1))


def hidden_size_of(model: PreTrainedModel) -> int:
    """Width of the final hidden state of any HF causal LM."""
    return int(model.get_output_embeddings().in_features)


def forward_with_hidden(
    model: PreTrainedModel, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, **kwargs
) -> tuple[torch.Tensor, torch.Tensor, object]:
    """One trunk pass returning (logits [B,T,V], final hidden [B,T,H], the KV cache when ``use_cache``).

    Calling the base model and the output head separately gives the value head the same hidden
    state the LM head sees, without asking for every layer's hidden states.
    """
    out = model.base_model(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
    hidden = out.last_hidden_state
    logits = model.get_output_embeddings()(hidden)
    return logits, hidden, out.cache


def save_checkpoint(
    path: str | Path,
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    value_head: ValueHead | None = None,
    meta: dict | None = None,
) -> Path:
    """Write an HF-format checkpoint directory (safetensors), plus the value head and Arbor metadata."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path, safe_serialization=True)
    tokenizer.save_pretrained(path)
    if value_head is not None:
        save_file(
            {k: v.detach().cpu().contiguous() for k, v in value_head.state_dict().items()}, path / VALUE_HEAD_FILE
        )
    (path / ARBOR_META_FILE).write_text(json.dumps(meta or {}, indent=2))
    return path


def load_value_head(path: str | Path, model: PreTrainedModel) -> ValueHead | None:
    """The value head saved beside a checkpoint, or None when the directory has none."""
    file = Path(path) / VALUE_HEAD_FILE
    if not file.is_file():
        return None
    head = ValueHead(hidden_size_of(model))
    head.load_state_dict(load_file(file))
    return head


def value_head_for(model: PreTrainedModel, path: str | Path | None) -> ValueHead:
    """The value head saved beside the checkpoint at ``path``, else a fresh one (V = 0.5 everywhere) sized to
    ``model``: what every component that searches or trains with a head starts from."""
    return (load_value_head(path, model) if path else None) or ValueHead(hidden_size_of(model))
