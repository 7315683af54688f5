"""Closed-loop driving metrics: what a run is judged by, since loss alone misleads.

The driving score follows the CARLA leaderboard: route completion x an infraction penalty that
starts at 1.0 and is multiplied by a factor per infraction. CarRacing has two infractions:

- **off-track event** (every wheel leaves the road; one event per excursion): x ``0.8``. Milder than
  CARLA's collision with a static object (x 0.65) because the car can drive back on by itself;
- **unstuck** (the car made no progress for seconds and had to be put back on the track — the
  Charles "unstuck" event, the analogue of CARLA's "agent blocked"): x ``0.6``.

So an expert lap with no infraction scores its completion (1.0 = 100 %), one excursion costs 20 %,
and a car that needs rescuing twice keeps 36 % of its completion.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

OFF_TRACK_FACTOR = 0.8
UNSTUCK_FACTOR = 0.6


@dataclass
class EpisodeTracker:
    """Accumulates one episode's metrics step by step from the env's info."""

    fps: float
    steps: int = 0
    reward: float = 0.0
    off_track_events: int = 0
    off_track_steps: int = 0
    speed_sum: float = 0.0
    _was_off: bool = field(default=False, repr=False)

    def update(self, reward: float, info: dict[str, Any], speed: float | None) -> None:
        self.steps += 1
        self.reward += float(reward)
        off = bool(info.get("off_track", False))
        if off:
            self.off_track_steps += 1
            if not self._was_off:
                self.off_track_events += 1
        self._was_off = off
        if speed is not None:
            self.speed_sum += float(speed)


@dataclass(frozen=True)
class EpisodeResult:
    """One driven track, as a row of the evaluation table."""

    seed: int
    reward: float
    completion: float  # fraction of the track's tiles visited, 0..1
    off_track_events: int
    off_track_s: float
    unstuck: int
    mean_speed: float
    lap_time_s: float | None
    steps: int
    score: float
    failed: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def driving_score(completion: float, off_track_events: int, unstuck: int) -> float:
    """CARLA-style: completion x product of per-infraction penalty factors (module docstring)."""
    penalty = OFF_TRACK_FACTOR**off_track_events * UNSTUCK_FACTOR**unstuck
    return float(completion) * penalty


def finish_episode(
    seed: int, tracker: EpisodeTracker, info: dict[str, Any], completion: float
) -> EpisodeResult:
    unstuck = int(info.get("unstuck_count", 0))
    lap = bool(info.get("lap_complete", False))
    return EpisodeResult(
        seed=seed,
        reward=round(tracker.reward, 3),
        completion=round(completion, 4),
        off_track_events=tracker.off_track_events,
        off_track_s=round(tracker.off_track_steps / tracker.fps, 3),
        unstuck=unstuck,
        mean_speed=round(tracker.speed_sum / max(tracker.steps, 1), 3),
        lap_time_s=round(tracker.steps / tracker.fps, 3) if lap else None,
        steps=tracker.steps,
        score=round(driving_score(completion, tracker.off_track_events, unstuck), 4),
    )


def failed_episode(seed: int, reason: str) -> EpisodeResult:
    nan = float("nan")
    return EpisodeResult(seed, nan, nan, 0, nan, 0, nan, None, 0, nan, failed=reason)


def _stats(values: Sequence[float]) -> tuple[float, float, float]:
    vals = [v for v in values if not math.isnan(v)]
    if not vals:
        return (math.nan, math.nan, math.nan)
    mean = sum(vals) / len(vals)
    std = math.sqrt(sum((v - mean) ** 2 for v in vals) / len(vals))
    return mean, std, min(vals)


def aggregate(rows: Sequence[EpisodeResult]) -> dict[str, Any]:
    """Mean ± std and min over the finished episodes (failed ones are counted, not averaged)."""
    ok = [r for r in rows if r.failed is None]
    out: dict[str, Any] = {"episodes": len(rows), "failed": len(rows) - len(ok)}
    for key in ("reward", "score", "completion", "off_track_events", "off_track_s", "unstuck",
                "mean_speed"):
        mean, std, low = _stats([float(getattr(r, key)) for r in ok])
        out[f"{key}_mean"], out[f"{key}_std"], out[f"{key}_min"] = mean, std, low
    laps = [r.lap_time_s for r in ok if r.lap_time_s is not None]
    out["laps_finished"] = len(laps)
    out["lap_time_mean"] = sum(laps) / len(laps) if laps else None
    return out
