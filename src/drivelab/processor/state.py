"""The processor's state: every number and size between stored data and the policy, typed.

A run records it once, as ``processor.json`` in its folder, when it starts: the frame stack,
normalisation (with the training split's channel mean/std), crop and resize, the history window
(signals, sizes, mean/std) and the targets (standardised heads' mean/std, delta heads' ranges).
The training loader, the runtime and offline evaluation all rebuild their preprocessing from
this one object, so none of them reads statistics by string key. Runs made before the file
existed recorded the same numbers under ``data`` in ``run.json``; `ProcessorState.from_run_facts`
rebuilds the state from those and the run's config.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from drivelab.config import CropConfig, ExperimentConfig
from drivelab.errors import DrivelabError

#: The layout of ``processor.json``; a reader refuses a version it does not know.
PROCESSOR_VERSION = 1
PROCESSOR_FILE = "processor.json"


class ProcessorError(DrivelabError):
    """Preprocessing that cannot be built: missing or damaged statistics, an unknown file."""


@dataclass(frozen=True)
class Statistics:
    """The training split's numbers the steps apply (see `drivelab.processor.statistics`).

    Frame mean/std are per RGB channel in [0, 1] units (``None`` unless normalization is
    ``scaled``); history ones per history component; target ones per standardised head.
    """

    frame_mean: tuple[float, ...] | None = None
    frame_std: tuple[float, ...] | None = None
    history_mean: tuple[float, ...] = ()
    history_std: tuple[float, ...] = ()
    target_mean: Mapping[str, float] = field(default_factory=dict)
    target_std: Mapping[str, float] = field(default_factory=dict)


class _State(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class FrameSteps(_State):
    """uint8 source frames [H, W, 3] -> the policy's float frames [3k, h, w].

    Stack ``stack`` frames, crop, normalise (``none`` [0, 1], ``shifted`` [-0.5, 0.5], ``scaled``
    by ``mean``/``std`` per RGB channel in [0, 1] units), resize to ``input_size``.
    """

    source_shape: tuple[int, int, int]
    stack: int = 1
    normalization: Literal["none", "shifted", "scaled"] = "shifted"
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    crop: CropConfig | None = None
    input_size: tuple[int, int]

    @model_validator(mode="after")
    def _scaled_has_statistics(self) -> FrameSteps:
        if self.normalization == "scaled" and (self.mean is None or self.std is None):
            raise ValueError("normalization 'scaled' needs the frame mean/std")
        return self


class HistorySteps(_State):
    """The last ``length`` telemetry rows of ``signals`` (``sizes`` values each), standardised."""

    signals: tuple[str, ...] = ()
    sizes: dict[str, int] = {}
    length: int = 0
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()


class TargetSteps(_State):
    """The expert's actions -> training targets: standardised heads and delta heads."""

    outputs: tuple[str, ...]
    mean: dict[str, float] = {}  # standardised heads: the training split's action mean
    std: dict[str, float] = {}
    delta: dict[str, tuple[float, float]] = {}  # delta heads: output -> its action range

    def scales(self) -> dict[str, float]:
        """What each standardised head's loss divides errors by (its target std)."""
        return dict(self.std)


class ProcessorState(_State):
    """Everything a run's preprocessing needs, saved with the run (``processor.json``)."""

    version: int = PROCESSOR_VERSION
    frames: FrameSteps
    history: HistorySteps = HistorySteps()
    targets: TargetSteps

    @classmethod
    def from_config(
        cls,
        config: ExperimentConfig,
        source_shape: Sequence[int],
        history_sizes: Mapping[str, int],
        statistics: Statistics | None = None,
    ) -> ProcessorState:
        """The state for ``config`` on frames of ``source_shape`` [H, W, C], with ``statistics``."""
        stats = statistics or Statistics()
        data, history = config.data, config.model.history
        frames = FrameSteps(
            source_shape=tuple(source_shape),  # type: ignore[arg-type]
            stack=data.frames,
            normalization=data.normalization,
            mean=stats.frame_mean,
            std=stats.frame_std,
            crop=data.crop,
            input_size=tuple(data.input_size),  # type: ignore[arg-type]
        )
        window = HistorySteps(
            signals=tuple(history.signals) if history else (),
            sizes={s: int(history_sizes[s]) for s in history.signals} if history else {},
            length=history.length if history else 0,
            mean=stats.history_mean,
            std=stats.history_std,
        )
        targets = TargetSteps(
            outputs=tuple(config.model.outputs),
            mean=dict(stats.target_mean),
            std=dict(stats.target_std),
            delta={h.output: (h.low, h.high) for h in config.model.heads if h.delta},
        )
        return cls(frames=frames, history=window, targets=targets)

    @classmethod
    def from_run_facts(cls, config: ExperimentConfig, facts: Mapping[str, Any]) -> ProcessorState:
        """The state of a run recorded before ``processor.json``, from its ``run.json`` data facts."""
        history = config.model.history
        sizes = facts.get("history_sizes") or (
            {s: history.signal_size(s) for s in history.signals} if history else {}
        )
        stats = Statistics(
            frame_mean=_floats(facts.get("frame_mean")),
            frame_std=_floats(facts.get("frame_std")),
            history_mean=_floats(facts.get("history_mean")) or (),
            history_std=_floats(facts.get("history_std")) or (),
            target_mean=dict(facts.get("target_mean") or {}),
            target_std=dict(facts.get("target_std") or {}),
        )
        return cls.from_config(config, facts["frame_shape"], sizes, stats)

    # ------------------------------------------------------------------ the file
    def to_json(self) -> str:
        """The text of ``processor.json`` (Python's float repr: every statistic round-trips)."""
        return json.dumps(self.model_dump(mode="json"), indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str, where: str = PROCESSOR_FILE) -> ProcessorState:
        """Read ``processor.json``; one `ProcessorError` line if it is damaged or too new."""
        try:
            raw = json.loads(text)
        except ValueError as exc:
            raise ProcessorError(f"{where} is not JSON ({exc}): the run's preprocessing is lost") from None
        version = raw.get("version") if isinstance(raw, dict) else None
        if version != PROCESSOR_VERSION:
            raise ProcessorError(
                f"{where} has processor version {version!r}; this drivelab reads version "
                f"{PROCESSOR_VERSION}: use the drivelab that trained the run"
            )
        try:
            return cls.model_validate(raw)
        except ValidationError as exc:
            first = exc.errors()[0]
            at = ".".join(str(p) for p in first["loc"])
            raise ProcessorError(f"{where}: {at}: {first['msg']}") from None


def _floats(values: Any) -> tuple[float, ...] | None:
    return tuple(float(v) for v in values) if values else None
