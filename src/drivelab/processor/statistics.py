"""The training split's statistics the processor's steps apply, from a dataset's moments.

The dataset stores exact per-episode moments (`drivelab.data.stats`); merged over the training
episodes they give the frame channel mean/std (``scaled`` normalisation), each history
component's mean/std (telemetry mixes scales: speed reaches ~100 m/s, steering stays within 0.4,
and standardised inputs keep an LSTM's gates out of saturation) and each standardised head's
action mean/std. Stds are floored at 1e-6 so a constant signal cannot divide by zero (a constant
history component is only centred: std 1).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Protocol

from drivelab.config import ExperimentConfig
from drivelab.processor.state import ProcessorError, Statistics

STD_FLOOR = 1e-6


class Moments(Protocol):
    """What the statistics need of a signal's moments (`drivelab.data.stats.SignalMoments`)."""

    @property
    def count(self) -> int: ...

    @property
    def mean(self) -> list[float]: ...

    @property
    def std(self) -> list[float]: ...


def training_statistics(
    config: ExperimentConfig, moments: Mapping[str, Moments], source: str
) -> Statistics:
    """Every statistic ``config``'s steps need, from the training split's ``moments``.

    ``source`` names the dataset in the one-line refusals (no frame statistics, non-finite ones).
    """
    history = config.model.history
    frame_mean, frame_std = frame_statistics(config.data.normalization, moments, source)
    history_mean, history_std = history_statistics(history.signals if history else [], moments)
    target_mean, target_std = target_statistics(
        [h.output for h in config.model.heads if h.standardize], moments
    )
    check_finite(source, {
        "frame mean/std": [*(frame_mean or ()), *(frame_std or ())],
        "history mean/std": [*history_mean, *history_std],
        "action mean/std": [*target_mean.values(), *target_std.values()],
    })
    return Statistics(frame_mean, frame_std, history_mean, history_std, target_mean, target_std)


def frame_statistics(
    normalization: str, moments: Mapping[str, Moments], source: str
) -> tuple[tuple[float, ...] | None, tuple[float, ...] | None]:
    """Per RGB channel mean/std in [0, 1] units for ``scaled`` frames, else (None, None)."""
    if normalization != "scaled":
        return None, None
    frames = moments.get("frames")
    if frames is None or frames.count == 0:
        raise ProcessorError(f"{source} has no frame statistics; normalization 'scaled' needs them")
    mean = tuple(m / 255.0 for m in frames.mean)
    std = tuple(max(s / 255.0, STD_FLOOR) for s in frames.std)
    return mean, std


def history_statistics(
    signals: Sequence[str], moments: Mapping[str, Moments]
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Mean/std of each history component (signals in order, each of its values)."""
    mean: list[float] = []
    std: list[float] = []
    for name in signals:
        m = moments[f"telemetry/{name}"]
        mean += m.mean
        # a component constant over the training split (a route command no training episode
        # had) is centred, not scaled: dividing by the floor turned a 1 seen only later into
        # 1e6 and the policy's output into garbage (found on the traffic world's one-hot)
        std += [v if v >= STD_FLOOR else 1.0 for v in m.std]
    return tuple(mean), tuple(std)


def target_statistics(
    outputs: Sequence[str], moments: Mapping[str, Moments]
) -> tuple[dict[str, float], dict[str, float]]:
    """Mean/std of each standardised head's action."""
    mean = {o: float(moments[f"actions/{o}"].mean[0]) for o in outputs}
    std = {o: max(float(moments[f"actions/{o}"].std[0]), STD_FLOOR) for o in outputs}
    return mean, std


def check_finite(source: str, stats: Mapping[str, Sequence[float]]) -> None:
    """Refuse NaN/Inf in the dataset's recorded moments before they scale every input.

    Non-finite statistics would make every loss NaN, and the trainer would blame the learning
    rate; the moments are committed with each episode, so the dataset is what is damaged.
    """
    for what, values in stats.items():
        if not all(math.isfinite(v) for v in values):
            raise ProcessorError(
                f"{source}: the {what} recorded in its episodes' moments are not finite, so "
                f"every input would be NaN: run `drivelab data verify {source}`"
            )


def needs_moments(config: ExperimentConfig) -> bool:
    """Whether any step needs the dataset's moments (reading them touches every episode)."""
    return (
        config.data.normalization == "scaled"
        or config.model.history is not None
        or any(h.standardize for h in config.model.heads)
    )
