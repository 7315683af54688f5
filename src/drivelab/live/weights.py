"""One policy version as the actors receive it: published once, passed by reference.

The trainer's checkpoint is read once per version into a `PolicyVersion` (config, processor
state, weights) and put into Ray's object store with one ``ray.put``; collectors and the player
get the `ObjectRef`, never the weights by value per call, and build their runtime once per
version (`runtime_for`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from drivelab.config import ExperimentConfig, load_config
from drivelab.evaluate.runtime import PolicyRuntime
from drivelab.processor.state import ProcessorState
from drivelab.runs.checkpoints import list_checkpoints, load_weights, weights_path
from drivelab.runs.folder import RunFolder


@dataclass(frozen=True)
class PolicyVersion:
    """A checkpoint as a unit of publication: ``version`` counts from 1, ``batch`` is its step."""

    version: int
    batch: int
    run: str
    config: ExperimentConfig
    processor: ProcessorState
    weights: dict[str, torch.Tensor]
    written_at: float  # the checkpoint file's mtime: the start of the hot-swap delay

    def runtime(self) -> PolicyRuntime:
        return PolicyRuntime(self.config, self.processor, self.weights, f"{Path(self.run).name}@{self.batch}")


def read_version(run: RunFolder, version: int, batch: int | None = None) -> PolicyVersion:
    """The run's checkpoint ``batch`` (default: the latest) as version ``version``."""
    if batch is None:
        batch = list_checkpoints(run.checkpoints)[-1]
    path = weights_path(run.checkpoints, batch)
    config = load_config(run.config_path)
    return PolicyVersion(
        version=version, batch=batch, run=str(run.path), config=config,
        processor=run.read_processor(config), weights=load_weights(path),
        written_at=path.stat().st_mtime,
    )


def publish(version: PolicyVersion) -> Any:
    """One ``ray.put`` per version; the reference is what every actor call carries."""
    import ray

    return ray.put(version)


class RuntimeCache:
    """An actor's runtime for the newest version it was handed, rebuilt only when it changes."""

    def __init__(self) -> None:
        self.version = 0
        self.runtime: PolicyRuntime | None = None
        self.received_at = time.time()

    def runtime_for(self, policy: PolicyVersion | None) -> PolicyRuntime | None:
        if policy is None:
            return None
        if policy.version != self.version or self.runtime is None:
            self.runtime = policy.runtime()
            self.version = policy.version
            self.received_at = time.time()
        return self.runtime
