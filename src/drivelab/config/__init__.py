"""The typed experiment configuration: one schema, one loader, one kind of error.

Every knob of an experiment (data, policy architecture, training) is declared in `schema` with its
type, its default and its checks, so a bad value is caught when the YAML file is read, not hours
into a run; `loading` reads files and overrides and turns any mistake into a single
:class:`ConfigError` line naming the key and what is allowed. The resolved config (every default
filled in) is what a run folder stores as ``config.yaml``.
"""

from drivelab.config.base import ConfigError
from drivelab.config.data_section import AugmentConfig, BalanceConfig, CropConfig, DataConfig
from drivelab.config.head_section import BinsConfig, HeadConfig
from drivelab.config.loading import apply_overrides, dump_config, load_config, parse_config
from drivelab.config.model_section import (
    BackboneConfig,
    HistoryConfig,
    InitFromConfig,
    ModelConfig,
    RecurrentConfig,
)
from drivelab.config.schema import ExperimentConfig
from drivelab.config.train_section import (
    AdadeltaConfig,
    AdamConfig,
    AdamWConfig,
    BPTTConfig,
    ConstantScheduleConfig,
    CosineScheduleConfig,
    SGDConfig,
    StepScheduleConfig,
    TrainConfig,
)

__all__ = [
    "AdadeltaConfig",
    "AdamConfig",
    "AdamWConfig",
    "AugmentConfig",
    "BPTTConfig",
    "BackboneConfig",
    "BalanceConfig",
    "BinsConfig",
    "ConfigError",
    "ConstantScheduleConfig",
    "CosineScheduleConfig",
    "CropConfig",
    "DataConfig",
    "ExperimentConfig",
    "HeadConfig",
    "HistoryConfig",
    "InitFromConfig",
    "ModelConfig",
    "RecurrentConfig",
    "SGDConfig",
    "StepScheduleConfig",
    "TrainConfig",
    "apply_overrides",
    "dump_config",
    "load_config",
    "parse_config",
]
