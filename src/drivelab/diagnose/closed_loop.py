"""Closed-loop A/B: the same held-out tracks driven normally, with the history at its training
mean, and with the frames blanked.

Offline reliance says what the loss depends on; only driving says whether the car needs the
road. A policy that scores as well with blank frames steers from its own past. The three
drives go through the evaluator's runner (`drivelab.evaluate.runner.evaluate`) with an
`InputOverride` in the `DriverSpec`, so workers, metrics and the driving score are eval's own.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from drivelab.evaluate.drivers import DriverSpec
from drivelab.evaluate.overrides import InputOverride
from drivelab.evaluate.runner import evaluate

NORMAL, HISTORY_MEAN, BLANK_FRAMES = "normal", "history_mean", "blank_frames"
AB_KEYS = ("score_mean", "score_std", "reward_mean", "reward_std", "completion_mean",
           "off_track_events_mean", "unstuck_mean", "mean_speed_mean",
           # a route world's (traffic) outcomes; absent (None) on CarRacing
           "success_rate", "collisions_per_episode", "route_failures_per_episode", "timeouts_per_episode")


@dataclass
class ClosedLoopAB:
    """Each variant's aggregate over the tracks, and the seconds each variant took per track."""

    tracks: list[int]
    variants: dict[str, dict[str, Any]]
    seconds_per_track: float

    def ratio(self, variant: str) -> float:
        """A variant's mean driving score over the normal one's (NaN when normal scores 0)."""
        normal = float(self.variants[NORMAL]["score_mean"])
        value = float(self.variants[variant]["score_mean"])
        return value / normal if normal > 0 else float("nan")


def ab_overrides(blank: np.ndarray, history_mean: np.ndarray | None) -> dict[str, InputOverride | None]:
    """The variants to drive: a policy without a history branch gets no history-mean drive."""
    variants: dict[str, InputOverride | None] = {NORMAL: None}
    if history_mean is not None and history_mean.size:
        variants[HISTORY_MEAN] = InputOverride(history=history_mean, name=HISTORY_MEAN)
    variants[BLANK_FRAMES] = InputOverride(frames=blank, name=BLANK_FRAMES)
    return variants


def closed_loop_ab(ref: str, runs_root: str, env: str, tracks: list[int], max_steps: int, workers: int,
                   overrides: dict[str, InputOverride | None],
                   stage: Callable[[str], None] | None = None) -> ClosedLoopAB:
    variants, seconds = {}, 0.0
    for k, (name, override) in enumerate(overrides.items(), start=1):
        if stage is not None:
            stage(f"closed loop {k}/{len(overrides)}: {name} on {len(tracks)} held-out track(s)")
        report = evaluate(DriverSpec("policy", ref, runs_root, override=override), tracks, env=env,
                          workers=workers, max_steps=max_steps)
        variants[name] = {k: report.aggregate.get(k) for k in AB_KEYS}
        seconds += report.seconds
    return ClosedLoopAB(list(tracks), variants, seconds / max(len(tracks), 1))
