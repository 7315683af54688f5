"""Training: the Fabric loop, objectives, schedules, checkpoints, run folders and logs.

Names are resolved on first use (PEP 562): evaluation workers and the watch player import
`drivelab.train.runs` or `.checkpoints` without paying for Lightning Fabric's import (~3 s).
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "CheckpointError": "drivelab.train.checkpoints",
    "HeadObjective": "drivelab.train.objectives",
    "InputError": "drivelab.train.inputs",
    "InputPipeline": "drivelab.train.inputs",
    "LRSchedule": "drivelab.train.schedules",
    "MetricsLog": "drivelab.train.logs",
    "Objective": "drivelab.train.objectives",
    "ProgressSink": "drivelab.train.loop",
    "RunError": "drivelab.train.runs",
    "RunFolder": "drivelab.train.runs",
    "TrainInputs": "drivelab.train.inputs",
    "TrainResult": "drivelab.train.trainer",
    "TrainingStopped": "drivelab.train.loop",
    "WatchOptions": "drivelab.train.watch",
    "build_optimizer": "drivelab.train.optimizers",
    "build_schedule": "drivelab.train.optimizers",
    "config_differences": "drivelab.train.trainer",
    "list_checkpoints": "drivelab.train.checkpoints",
    "load_train_config": "drivelab.train.trainer",
    "load_trainer_state": "drivelab.train.checkpoints",
    "load_weights": "drivelab.train.checkpoints",
    "open_inputs": "drivelab.train.inputs",
    "parse_checkpoint_ref": "drivelab.train.runs",
    "read_metrics": "drivelab.train.logs",
    "resolve_checkpoint": "drivelab.train.runs",
    "train": "drivelab.train.trainer",
    "weights_path": "drivelab.train.checkpoints",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'drivelab.train' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
