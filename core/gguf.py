"""GGUF files as a model source: ``model.path=FILE.gguf`` works wherever ``model.path=DIR`` does.

A GGUF file (llama.cpp's format, often quantized) is converted once into a plain Hugging Face directory
(safetensors weights, the tokenizer with its chat template, ``config.json``) and every later use loads
that directory. transformers dequantizes the file to float32 (``from_pretrained(..., gguf_file=...)``, which
needs the ``gguf`` package); the model it returns still carries the GGUF quantization config, which
``save_pretrained`` refuses, so the weights go into a clean model built from the same config, which saves
and reloads with plain ``from_pretrained``.

Where: ``$ARBOR_CACHE_DIR/gguf/<name>-<sha256 prefix>`` (default ``~/.cache/arbor``), keyed by the file's
content, so a second run reuses the conversion and a changed file converts again. The conversion is
written to a temporary directory and renamed into place, so two processes converting at once, or a
conversion cut short, never leave a half-written directory behind. ``arbor convert FILE.gguf OUT_DIR``
does only the conversion.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
from pathlib import Path

from arbor.core.errors import ModelLoadError

log = logging.getLogger(__name__)

MAGIC = b"GGUF"  # the first four bytes of every GGUF file
CACHE_ENV = "ARBOR_CACHE_DIR"


def is_gguf(path: str | Path) -> bool:
    return Path(path).suffix.lower() == ".gguf"


def cache_root() -> Path:
    """Where conversions live: ``$ARBOR_CACHE_DIR``, else ``$XDG_CACHE_HOME/arbor``, else ``~/.cache/arbor``."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "arbor"


def check_gguf(file: Path) -> None:
    """ModelLoadError naming the file unless it is there and starts as a GGUF file does."""
    if not file.is_file():
        raise ModelLoadError(f"model.path: GGUF file not found: {file}")
    with file.open("rb") as f:
        head = f.read(4)
    if head != MAGIC:
        raise ModelLoadError(f"model.path: {file} is not a GGUF file (it does not start with {MAGIC!r})")


def content_key(file: Path) -> str:
    """The first 16 hex digits of the file's sha256: what a conversion in the cache is keyed by."""
    digest = hashlib.sha256()
    with file.open("rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


def converted_dir(file: str | Path) -> Path:
    """The HF directory converted from ``file`` (converting it now unless the cache holds it)."""
    file = Path(file).resolve()
    check_gguf(file)
    out = cache_root() / "gguf" / f"{file.stem}-{content_key(file)}"
    if (out / "config.json").is_file():
        return out
    log.info("converting %s to %s (once; later runs reuse it)", file, out)
    return convert(file, out, replace=False)


def convert(file: str | Path, out_dir: str | Path, replace: bool = True) -> Path:
    """Convert the GGUF ``file`` into a safetensors HF directory at ``out_dir``. An existing ``out_dir`` is
    replaced, or with ``replace=False`` kept (another process converted the same file first). A corrupt or
    truncated file raises ModelLoadError naming it."""
    file, out_dir = Path(file).resolve(), Path(out_dir)
    check_gguf(file)
    try:
        import gguf  # noqa: F401 - transformers reads GGUF through it; say so if it is missing
    except ImportError:
        raise ModelLoadError(f"model.path: reading {file} needs the `gguf` package (pip install gguf)") from None
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    try:
        tokenizer = AutoTokenizer.from_pretrained(file.parent, gguf_file=file.name)
        loaded = AutoModelForCausalLM.from_pretrained(file.parent, gguf_file=file.name, dtype="float32")
    except Exception as exc:  # noqa: BLE001 - a truncated or corrupt file fails anywhere in the reader
        raise ModelLoadError(
            f"model.path: cannot read the GGUF file {file} (corrupt or truncated?): {type(exc).__name__}: {exc}"
        ) from None
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config  # the weights are dequantized; save_pretrained refuses the GGUF config
    clean = AutoModelForCausalLM.from_config(config)
    clean.load_state_dict(loaded.state_dict(), strict=True)
    clean.generation_config = loaded.generation_config
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        clean.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        (tmp / "SOURCE").write_text(f"{file}\n")
        if out_dir.exists() and replace:
            shutil.rmtree(out_dir)
        if out_dir.exists():
            shutil.rmtree(tmp)
        else:
            os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir
