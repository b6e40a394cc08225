"""Loading a config: the schema's defaults, then the YAML recipe, then ``key=value`` overrides, then the checks.

An unknown key or a value of the wrong type (a choice outside its set included) stops the command at start-up
with a :class:`ConfigError` that names the full dotted key and the file or override it came from.
"""

from __future__ import annotations

import re
from enum import Enum
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException, ValidationError

from arbor.core.config.checks import validate
from arbor.core.config.schema import ArborConfig
from arbor.core.errors import ConfigError


def _leaf_keys(node: Any, prefix: str = "") -> list[str]:
    """Dotted paths of every leaf under a nested mapping (the keys a recipe or override sets)."""
    if isinstance(node, (dict, DictConfig)):
        items = node.items_ex(resolve=False) if isinstance(node, DictConfig) else node.items()
        out: list[str] = []
        for k, v in items:
            out += _leaf_keys(v, f"{prefix}.{k}" if prefix else str(k))
        return out
    return [prefix]


def _field_hint(key: str) -> Any:
    """The declared type hint of a dotted key (a list's element type for ``key[i]``), or None if unknown."""
    import typing

    cls: Any = ArborConfig
    hint: Any = None
    for part in re.sub(r"\[\d+\]", "", key).split("."):
        hints = typing.get_type_hints(cls)
        if part not in hints:
            return None
        hint = hints[part]
        cls = hint
    if typing.get_origin(hint) is list:  # a list's element, e.g. search.kinds[1]
        hint = typing.get_args(hint)[0]
    return hint


def _field_type(key: str) -> str:
    """The declared type of a dotted key, as a reader would write it (``int``, ``Optional[str]``...)."""
    hint = _field_hint(key)
    if hint is None:
        return "a valid value"
    if isinstance(hint, type) and issubclass(hint, Enum):
        return "one of " + ", ".join(m.value for m in hint)
    return getattr(hint, "__name__", None) if isinstance(hint, type) else str(hint).replace("typing.", "")


# Keys that moved into their component's or variant's own section: an old recipe is told where they went.
MOVED = {
    **{f"search.{k}": f"search.mcts.{k}" for k in ("simulations", "c_puct", "dirichlet_alpha", "dirichlet_eps")},
    **{f"search.{k}": f"search.mcts.{k}" for k in ("virtual_loss", "leaves_per_round", "token_budget")},
    "search.beam_width": "search.beam.width",
    "search.num_samples": "search.best_of_n.num_samples",
    "train.is_cap": "train.decoupled_ppo.is_cap",
    "train.is_mode": "train.decoupled_ppo.is_mode",
    "train.buffer_capacity": "buffer.capacity",
    **{f"train.{k}": f"buffer.{k}" for k in ("sampler", "max_policy_lag", "samples_per_insert")},
    **{f"train.{k}": f"buffer.{k}" for k in ("min_size_to_sample", "error_buffer")},
    "prm.beta": "prm.implicit.beta",
    "prm.implicit_lr": "prm.implicit.lr",
    "prm.online": "prm.implicit.online",
}


def _explain(exc: OmegaConfBaseException, source: str, given: Any) -> ConfigError:
    key = str(getattr(exc, "full_key", None) or "")
    if isinstance(exc, ConfigKeyError) or " not in " in str(exc):
        # omegaconf names the first missing segment; report the full dotted key the user wrote
        full = next((k for k in _leaf_keys(given) if k == key or k.startswith(key + ".")), key)
        moved = f" (it is now '{MOVED[full]}')" if full in MOVED else ""
        return ConfigError(f"{source}: unknown config key '{full}'{moved}")
    if isinstance(exc, ValidationError):
        detail = str(exc).splitlines()[0]
        return ConfigError(f"{source}: config key '{key}' expects {_field_type(key)}: {detail}")
    return ConfigError(f"{source}: bad value for config key '{key}': {str(exc).splitlines()[0]}")


def _choice_words(node: DictConfig) -> DictConfig:
    """YAML 1.1 reads ``off`` as false: a choice key that has an ``off`` value gets it back (so
    ``train.journey.mode=off`` means off, not an error), in a recipe and in an override alike."""
    for key in _leaf_keys(node):
        value = OmegaConf.select(node, key, throw_on_missing=False)
        if value is not False:
            continue
        hint = _field_hint(key)
        if isinstance(hint, type) and issubclass(hint, Enum) and "off" in {m.value for m in hint}:
            OmegaConf.update(node, key, "off", merge=False)
    return node


def _merge(base: DictConfig, other: Any, source: str) -> DictConfig:
    if isinstance(other, DictConfig):
        other = _choice_words(other)
    try:
        return OmegaConf.merge(base, other)
    except OmegaConfBaseException as exc:
        raise _explain(exc, source, other) from None


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> ArborConfig:
    """Defaults, then the YAML recipe at ``path``, then ``key=value`` overrides; typed and checked."""
    cfg = OmegaConf.structured(ArborConfig)
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            recipe = OmegaConf.load(path)
        except Exception as exc:  # yaml errors carry line numbers in their text
            raise ConfigError(f"{path}: cannot parse YAML: {exc}") from None
        cfg = _merge(cfg, recipe, str(path))
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"override '{item}' is not of the form key=value")
        key = item.split("=", 1)[0]
        try:
            dot = OmegaConf.from_dotlist([item])
        except OmegaConfBaseException as exc:
            raise ConfigError(f"override '{item}': {str(exc).splitlines()[0]}") from None
        cfg = _merge(cfg, dot, f"override '{key}'")
    try:
        OmegaConf.resolve(cfg)
    except OmegaConfBaseException as exc:
        raise _explain(exc, "config", cfg) from None
    obj = OmegaConf.to_object(cfg)
    assert isinstance(obj, ArborConfig)
    validate(obj)
    return obj


def to_yaml(cfg: ArborConfig) -> str:
    """The resolved config as YAML, as written into every run directory."""
    return OmegaConf.to_yaml(OmegaConf.structured(cfg))
