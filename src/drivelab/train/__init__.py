"""Training: the Fabric loop, schedules, samplers and logs (run folders: `drivelab.runs`; losses: `drivelab.models.objectives`).

Names are resolved on first use (PEP 562), so importing one of them pays for Lightning Fabric's
import (~3 s) only when it needs Fabric.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "InputError": "drivelab.processor.completion",
    "LRSchedule": "drivelab.train.schedules",
    "MetricsLog": "drivelab.train.logs",
    "ProgressSink": "drivelab.train.loop",
    "TrainInputs": "drivelab.train.inputs",
    "TrainResult": "drivelab.train.trainer",
    "TrainingStopped": "drivelab.train.loop",
    "build_optimizer": "drivelab.train.optimizers",
    "build_schedule": "drivelab.train.optimizers",
    "config_differences": "drivelab.train.resume",
    "load_train_config": "drivelab.train.config_source",
    "open_inputs": "drivelab.train.inputs",
    "train": "drivelab.train.trainer",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'drivelab.train' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
