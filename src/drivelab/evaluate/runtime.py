"""The policy runtime: a trained run driving step by step.

Training sees samples; driving sees a stream. The runtime turns the stream back into samples with
the loader's own layout (`drivelab.processor.SampleStream`: the last k frames and T telemetry
rows, the first step repeated at the start), applies the run's own input pipeline (the
normalisation and history statistics it trained with, from its `ProcessorState`), and maps heads
back to actions (regression clipped to the action range; classification by argmax or sampling;
delta heads added to the last action). It needs only a run folder and an env: nothing here
knows the trainer.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from drivelab.config import ExperimentConfig, load_config
from drivelab.errors import DrivelabError
from drivelab.evaluate.convcam import ConvCam
from drivelab.evaluate.overrides import InputOverride
from drivelab.models.factory import load_trained_policy
from drivelab.models.kinds import kind_of
from drivelab.precision import bf16_support
from drivelab.processor.fit import DataSpec, PolicyNeeds, check_fit
from drivelab.processor.layout import DeltaActions, SampleStream
from drivelab.processor.pipeline import InputPipeline
from drivelab.processor.state import ProcessorState
from drivelab.runs.checkpoints import load_weights
from drivelab.runs.folder import resolve_checkpoint
from drivelab.sim import DrivingEnv
from drivelab.sim.base import Observation


class PolicyLoadError(DrivelabError):
    """A run that cannot drive this env (no checkpoint, other actions, other frames)."""


class PolicyRuntime:
    """One loaded policy plus the per-episode buffers it needs to act."""

    def __init__(
        self,
        config: ExperimentConfig,
        processor: ProcessorState,
        weights: dict[str, torch.Tensor],
        label: str,
        sample: bool = False,
        seed: int = 0,
        precision: str = "32",
    ) -> None:
        self.config = config
        # bf16 autocast for the forward pass where the CPU/GPU computes bf16 natively; the
        # actions always come out in fp32 (see `inference_precision`)
        self.precision, _ = inference_precision(precision)
        self.label = label
        self.sample = sample
        self.processor = processor
        self.frame_shape = processor.frames.source_shape
        self.k = processor.frames.stack
        self.policy = load_trained_policy(config, processor.history.sizes, weights, label,
                                          error=PolicyLoadError)
        self.pipeline = InputPipeline(processor)
        self.stream = SampleStream(self.k, processor.history.signals, processor.history.length)
        self._generator = torch.Generator().manual_seed(seed)
        self.latencies_s: list[float] = []
        # The policy's kind says what it carries from step to step (the LSTM's (h, c), or nothing).
        self.kind = kind_of(config.model)
        # delta heads predict a change of the last executed action, clipped to its [low, high]
        targets = processor.targets
        self.delta = DeltaActions(tuple(targets.delta), targets.delta)
        self._state: torch.Tensor | None = None
        #: `drivelab diagnose`'s A/B drives: frames blanked or history held at its mean
        self.override: InputOverride | None = None

    # ------------------------------------------------------------------ loading
    @classmethod
    def from_ref(
        cls, ref: str, runs_root: str | Path = "runs", sample: bool = False, precision: str = "32"
    ) -> PolicyRuntime:
        """``<run>[@batch]``: a run folder path or a ``<line>_vN`` name under ``runs_root``."""
        run, batch, weights_file = resolve_checkpoint(ref, Path(runs_root))
        config = load_config(run.config_path)
        return cls(config, run.read_processor(config), load_weights(weights_file),
                   f"{run.name}@{batch}", sample, precision=precision)

    def check_env(self, env: DrivingEnv) -> None:
        """Refuse an env this policy cannot drive, naming what differs (`check_fit`)."""
        needs = PolicyNeeds.of_processor(self.processor)
        check_fit(DataSpec.of_env(env), needs, who=self.label, error=PolicyLoadError)

    # ------------------------------------------------------------------ driving
    def reset(self, seed: int = 0) -> None:
        """A new episode: empty buffers, and sampling reseeded so each track replays exactly."""
        self.stream.reset()
        self._state = None  # a stateful kind starts every episode from its zero state
        self._generator.manual_seed(seed)

    def observe(self, obs: Observation) -> dict[str, torch.Tensor]:
        """Push one observation; return the raw batch of one sample, laid out as the loader does."""
        sample = self.stream.push(obs.frame, obs.telemetry)
        return {key: torch.from_numpy(value) for key, value in sample.items()}

    def act(self, obs: Observation) -> dict[str, float]:
        """One step: observe, run the policy, return {output: action value}."""
        started = time.perf_counter()
        batch = self.observe(obs)
        if self.override is not None:
            batch = self.override.apply(batch)
        bf16 = self.precision == "bf16"
        with torch.inference_mode():
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                results, self._state = self.kind.step(self.policy, *self.pipeline(batch), self._state)
            if bf16:
                results = {k: v.float() for k, v in results.items()}
            actions = self.policy.actions(results, sample=self.sample, generator=self._generator)
        out = self.delta.actions(
            {name: float(value.reshape(-1)[0]) for name, value in actions.items()}, obs.telemetry
        )
        self.latencies_s.append(time.perf_counter() - started)
        return out


#: eval --precision spellings
INFERENCE_PRECISIONS = ("32", "bf16", "auto")


def inference_precision(requested: str) -> tuple[str, str | None]:
    """``32``, ``bf16`` or ``auto`` -> (``32`` or ``bf16`` on this CPU, a note on any fallback).

    bf16 is used only where the CPU has AMX / AVX-512 BF16: elsewhere it is emulated and slower
    than fp32, so an explicit ``bf16`` there drives in fp32 and the note says so.
    """
    if requested not in INFERENCE_PRECISIONS:
        raise PolicyLoadError(f"--precision {requested!r} is unknown: use {', '.join(INFERENCE_PRECISIONS)}")
    if requested == "32":
        return "32", None
    ok, why = bf16_support("cpu")
    if ok:
        return "bf16", None
    return "32", (f"--precision {requested}: {why}; driving in fp32" if requested == "bf16" else None)


class StepRuntime(Protocol):
    """What drives step by step: `PolicyRuntime`, or the onnx engine (`drivelab.export.engine`)."""

    label: str

    def check_env(self, env: DrivingEnv) -> None: ...

    def reset(self, seed: int = 0) -> None: ...

    def act(self, obs: Observation) -> dict[str, float]: ...


class PolicyDriver:
    """The evaluator's view of a runtime: actions in the env's order, clipped to their range."""

    def __init__(self, runtime: StepRuntime, env: DrivingEnv, convcam: bool = False) -> None:
        runtime.check_env(env)
        self.runtime = runtime
        self.name = runtime.label
        self._names = [s.name for s in env.action_specs]
        self._low = np.array([s.low if s.low is not None else -np.inf for s in env.action_specs])
        self._high = np.array([s.high if s.high is not None else np.inf for s in env.action_specs])
        self._frame_height = int(env.frame_shape[0])
        self.convcam: ConvCam | None = None
        if convcam:
            if not isinstance(runtime, PolicyRuntime):
                raise PolicyLoadError(f"--convcam reads the torch policy's feature maps: {runtime.label} "
                                      "runs on another engine; use --engine torch")
            self.convcam = ConvCam(runtime.policy.backbone, runtime.policy.frame_shape)

    @classmethod
    def from_run(
        cls,
        ref: str,
        env: DrivingEnv,
        runs_root: str = "runs",
        sample: bool = False,
        convcam: bool = False,
        precision: str = "32",
        override: InputOverride | None = None,
    ) -> PolicyDriver:
        runtime = PolicyRuntime.from_ref(ref, runs_root, sample, precision)
        runtime.override = override
        return cls(runtime, env, convcam=convcam)

    def reset(self, seed: int) -> None:
        self.runtime.reset(seed)
        if self.convcam is not None:
            self.convcam.reset()

    def side_image(self, frame: np.ndarray) -> np.ndarray | None:
        """The last step's feature maps as a heat map over ``frame`` (None without --convcam)."""
        return None if self.convcam is None else self.convcam.heat_map(frame)

    def side_label(self) -> str | None:
        return None if self.convcam is None else self.convcam.label

    def act(self, obs: Observation, env: DrivingEnv) -> np.ndarray:
        values = self.runtime.act(obs)
        action = np.array([values.get(n, 0.0) for n in self._names], np.float64)
        return np.clip(action, self._low, self._high).astype(np.float32)
