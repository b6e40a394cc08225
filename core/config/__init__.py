"""Arbor's one typed config: the schema (``schema``), loading a recipe with overrides (``loading``), and the
checks the schema's types and bounds cannot say alone (``checks``).

Every command is ``arbor <command> CONFIG [key=value ...]``: the YAML recipe is merged onto the schema's
defaults (which are the default recipe, ``configs/countdown_tiny.yaml``), then the dotted overrides. An
unknown key, a value of the wrong type, a choice outside its set or a number outside its bounds stops the
command at start-up with a :class:`~arbor.core.errors.ConfigError` that names the full dotted key.
"""

from arbor.core.config.loading import load_config, to_yaml
from arbor.core.config.schema import (
    ArborConfig,
    ArithConfig,
    BeamConfig,
    BestOfNConfig,
    BufferConfig,
    CountdownConfig,
    DataConfig,
    DecoupledPPOConfig,
    EvalConfig,
    ImplicitPRMConfig,
    MCTSConfig,
    ModelConfig,
    PRMConfig,
    ResourcesConfig,
    RunConfig,
    SearchConfig,
    SFTConfig,
    TaskConfig,
    TrainConfig,
    ValueConfig,
    WandbConfig,
    behaviour_temperature,
)

__all__ = [
    "behaviour_temperature",
    "ArborConfig",
    "ArithConfig",
    "BeamConfig",
    "BestOfNConfig",
    "BufferConfig",
    "CountdownConfig",
    "DataConfig",
    "DecoupledPPOConfig",
    "EvalConfig",
    "ImplicitPRMConfig",
    "MCTSConfig",
    "ModelConfig",
    "PRMConfig",
    "ResourcesConfig",
    "RunConfig",
    "SFTConfig",
    "SearchConfig",
    "TaskConfig",
    "TrainConfig",
    "ValueConfig",
    "WandbConfig",
    "load_config",
    "to_yaml",
]
