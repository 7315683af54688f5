"""Training: the Fabric loop, objectives, schedules, checkpoints, run folders and logs."""

from drivelab.train.checkpoints import (
    CheckpointError,
    list_checkpoints,
    load_trainer_state,
    load_weights,
    weights_path,
)
from drivelab.train.inputs import InputError, InputPipeline, TrainInputs, open_inputs
from drivelab.train.logs import MetricsLog, read_metrics
from drivelab.train.loop import ProgressSink, TrainingStopped
from drivelab.train.objectives import HeadObjective, Objective
from drivelab.train.optimizers import build_optimizer, build_schedule
from drivelab.train.runs import RunError, RunFolder, parse_checkpoint_ref, resolve_checkpoint
from drivelab.train.schedules import LRSchedule
from drivelab.train.trainer import TrainResult, config_differences, load_train_config, train
from drivelab.train.watch import WatchOptions

__all__ = [
    "CheckpointError",
    "HeadObjective",
    "InputError",
    "InputPipeline",
    "LRSchedule",
    "MetricsLog",
    "Objective",
    "ProgressSink",
    "RunError",
    "RunFolder",
    "TrainInputs",
    "TrainResult",
    "TrainingStopped",
    "WatchOptions",
    "build_optimizer",
    "build_schedule",
    "config_differences",
    "list_checkpoints",
    "load_train_config",
    "load_trainer_state",
    "load_weights",
    "open_inputs",
    "parse_checkpoint_ref",
    "read_metrics",
    "resolve_checkpoint",
    "train",
    "weights_path",
]
