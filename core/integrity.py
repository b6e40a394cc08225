"""Cheap checks that weight files are whole, made before any process is started or anything written.

A truncated ``model.safetensors`` or a pickle where tensors belong would otherwise surface as a raw
``SafetensorError`` or ``UnpicklingError`` inside a Ray actor half a minute into a run. These checks read
headers only (safetensors: the 8-byte length and the JSON index of tensors, then the file's size against the
last tensor's end), so they cost milliseconds on any model size.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

from arbor.core.errors import ModelLoadError

MAX_HEADER = 100 << 20  # the safetensors format's own limit on its JSON header


def check_safetensors(path: Path) -> None:
    """``path`` is a whole safetensors file; ModelLoadError names the file and what is wrong."""
    size = path.stat().st_size
    try:
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise ValueError(f"{size} bytes, shorter than the 8-byte header length")
            (n,) = struct.unpack("<Q", head)
            if n > MAX_HEADER or 8 + n > size:
                raise ValueError(f"header of {n} bytes does not fit a file of {size}")
            header = json.loads(f.read(n))
        end = max((int(t["data_offsets"][1]) for k, t in header.items() if k != "__metadata__"), default=0)
    except (ValueError, KeyError, TypeError, IndexError, AttributeError) as exc:
        raise ModelLoadError(f"{path}: not a readable safetensors file ({exc})") from None
    if size < 8 + n + end:
        raise ModelLoadError(f"{path}: truncated: {size} bytes, its tensors end at byte {8 + n + end}")


def check_weights(directory: Path) -> None:
    """Every safetensors file in ``directory`` (policy shards, value head, PRM) is whole, and every shard a
    ``*.safetensors.index.json`` names is there."""
    for index in sorted(directory.glob("*.safetensors.index.json")):
        try:
            shards = set(json.loads(index.read_text())["weight_map"].values())
        except (OSError, ValueError, KeyError, AttributeError) as exc:
            raise ModelLoadError(f"{index}: not a readable shard index ({exc})") from None
        missing = sorted(s for s in shards if not (directory / s).is_file())
        if missing:
            raise ModelLoadError(f"{index}: names shards that are missing: {', '.join(missing)}")
    for path in sorted(directory.glob("*.safetensors")):
        check_safetensors(path)
