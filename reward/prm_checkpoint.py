"""Loading a process reward model saved by ``arbor prm``: an explicit head on a trunk, or PRIME's implicit PRM."""

from __future__ import annotations

import json
from pathlib import Path

from arbor.core.errors import ModelLoadError
from arbor.core.model import ARBOR_META_FILE, VALUE_HEAD_FILE, load_pretrained, load_value_head
from arbor.core.tasks.base import STEP_SEP
from arbor.reward.implicit_prm import ImplicitPRM
from arbor.reward.prm import ProcessRewardModel


def load_prm(path: str | Path, step_sep: str = STEP_SEP) -> ProcessRewardModel:
    """The PRM saved at ``path`` by ``arbor prm`` (or any checkpoint with a value head); never downloads.

    An implicit PRM (``prm.kind=implicit``) loads its reference policy from the path its metadata names.
    """
    model, tokenizer = load_pretrained(path)
    meta_file = Path(path) / ARBOR_META_FILE
    meta = json.loads(meta_file.read_text()) if meta_file.is_file() else {}
    if meta.get("kind") == "implicit":
        reference, _ = load_pretrained(meta["reference"])
        return ImplicitPRM(model, reference, tokenizer, float(meta["beta"]), step_sep=step_sep)
    head = load_value_head(path, model)
    if head is None:
        raise ModelLoadError(f"prm.path: {path} has no {VALUE_HEAD_FILE}; train one with `arbor prm CONFIG`")
    return ProcessRewardModel(model, tokenizer, head, step_sep=step_sep)
