"""Who drives during evaluation: a trained policy, the privileged expert, or random actions.

A `DriverSpec` is the picklable description sent to evaluation workers; `build_driver` turns it
into a driver inside the worker. All drivers share one small interface so the evaluator treats
the reference rows (expert, random) exactly like a policy.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from drivelab.errors import DrivelabError
from drivelab.evaluate.overrides import InputOverride
from drivelab.sim import DrivingEnv, make_expert
from drivelab.sim.base import Observation

BASELINES = ("expert", "random")
#: What runs a trained policy: the torch runtime, or onnxruntime on the exported graph.
ENGINES = ("torch", "onnx")


class Driver(Protocol):
    """What the runner drives with: the expert, the random baseline or a trained policy."""

    name: str

    def reset(self, seed: int) -> None: ...

    def act(self, obs: Observation, env: DrivingEnv) -> np.ndarray: ...


@dataclass(frozen=True)
class DriverSpec:
    """``kind`` is ``expert``, ``random`` or ``policy`` (then ``run`` is `<run>[@batch]`)."""

    kind: str
    run: str | None = None
    runs_root: str = "runs"
    sample: bool = False
    convcam: bool = False  # policy only: tile the backbone's last feature maps into the video
    precision: str = "32"  # policy only: 32, bf16 or auto (see drivelab.evaluate.runtime)
    engine: str = "torch"  # policy only: torch (a run) or onnx (``run`` is an exported .onnx file)
    override: InputOverride | None = None  # policy only, torch only: `drivelab diagnose`'s A/B inputs

    @property
    def label(self) -> str:
        """The run's folder name (and ``@batch``), the .onnx file's name, or the baseline's name."""
        if self.kind == "policy" and self.run and self.engine == "onnx":
            return Path(self.run).name
        if self.kind == "policy" and self.run:
            path, _, batch = self.run.partition("@")
            return Path(path).name + (f"@{batch}" if batch else "")
        return self.kind


class ExpertDriver:
    """The privileged demonstrator: the reference every policy is measured against."""

    name = "expert"

    def __init__(self, env: DrivingEnv) -> None:
        self._expert = make_expert(env)

    def reset(self, seed: int) -> None:
        self._expert.reset()

    def act(self, obs: Observation, env: DrivingEnv) -> np.ndarray:
        return np.asarray(self._expert.act(env), np.float32)


class RandomDriver:
    """Uniform random actions within the action bounds, seeded per track: the floor."""

    name = "random"

    def __init__(self, env: DrivingEnv) -> None:
        self._low = np.array([s.low if s.low is not None else -1.0 for s in env.action_specs])
        self._high = np.array([s.high if s.high is not None else 1.0 for s in env.action_specs])
        self._rng = np.random.default_rng(0)

    def reset(self, seed: int) -> None:
        self._rng = np.random.default_rng([seed, 0xD1CE])

    def act(self, obs: Observation, env: DrivingEnv) -> np.ndarray:
        return self._rng.uniform(self._low, self._high).astype(np.float32)


def build_driver(spec: DriverSpec, env: DrivingEnv) -> Driver:
    if spec.kind == "expert":
        return ExpertDriver(env)
    if spec.kind == "random":
        return RandomDriver(env)
    if spec.kind == "policy":
        from drivelab.evaluate.runtime import PolicyDriver

        if not spec.run:
            raise DrivelabError("a policy driver needs a run reference")
        if spec.engine == "onnx":
            if spec.override is not None:
                raise DrivelabError("input overrides (drivelab diagnose) run on the torch engine only")
            from drivelab.export.engine import OnnxRuntime

            return PolicyDriver(OnnxRuntime.from_file(spec.run), env)
        if spec.engine != "torch":
            raise DrivelabError(f"--engine {spec.engine!r} is unknown: use {' or '.join(ENGINES)}")
        return PolicyDriver.from_run(
            spec.run, env, runs_root=spec.runs_root, sample=spec.sample, convcam=spec.convcam,
            precision=spec.precision, override=spec.override,
        )
    raise DrivelabError(f"unknown driver {spec.kind!r}: use a run, or --baseline expert|random")
