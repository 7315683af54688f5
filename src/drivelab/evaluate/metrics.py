"""Closed-loop driving metrics: what a run is judged by, since loss alone misleads.

The driving score follows the CARLA leaderboard: route completion x an infraction penalty that
starts at 1.0 and is multiplied by a factor per infraction. CarRacing has two infractions:

- **off-track event** (every wheel leaves the road; one event per excursion): x ``0.8``. Milder than
  CARLA's collision with a static object (x 0.65) because the car can drive back on by itself;
- **unstuck** (the car made no progress for seconds and had to be put back on the track — the
  Charles "unstuck" event, the analogue of CARLA's "agent blocked"): x ``0.6``.

So an expert lap with no infraction scores its completion (1.0 = 100 %), one excursion costs 20 %,
and a car that needs rescuing twice keeps 36 % of its completion.

Envs that report typed infractions on their steps (`drivelab.sim.infractions`, the traffic
worlds) are scored on the same contract with CARLA's factors in `INFRACTION_FACTORS`: a vehicle
collision x 0.60, leaving the road x 0.65, a timeout x 0.7; a wrong exit or route deviation
fails the route (the episode ends, so completion stops where it was; no extra factor).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from drivelab.sim.infractions import Infraction, Outcome

OFF_TRACK_FACTOR = 0.8
UNSTUCK_FACTOR = 0.6
#: Penalty factor per typed infraction (CARLA leaderboard values where CARLA has one).
INFRACTION_FACTORS: dict[Infraction, float] = {
    Infraction.COLLISION: 0.60,
    Infraction.STRUCK: 0.60,  # CARLA penalises every collision alike; the cause is reported
    Infraction.OFF_ROAD: 0.65,
    Infraction.TIMEOUT: 0.70,
    Infraction.WRONG_EXIT: 1.0,  # the route fails: the episode ends there
    Infraction.ROUTE_DEVIATION: 1.0,
}


@dataclass
class EpisodeTracker:
    """Accumulates one episode's metrics step by step from the env's info."""

    fps: float
    steps: int = 0
    reward: float = 0.0
    off_track_events: int = 0
    off_track_steps: int = 0
    speed_sum: float = 0.0
    infractions: Counter = field(default_factory=Counter)
    _was_off: bool = field(default=False, repr=False)

    def update(self, reward: float, info: dict[str, Any], speed: float | None,
               infractions: Iterable[Infraction] = ()) -> None:
        """One step: ``info``'s CarRacing keys (off_track) and the step's typed infractions."""
        self.steps += 1
        self.infractions.update(Infraction(i) for i in infractions)
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
    # typed outcome and infractions, for envs that report them (traffic); defaults otherwise
    outcome: str | None = None
    collisions: int = 0  # every collision, whoever caused it
    collisions_struck: int = 0  # of those, another car drove into the stopped or slower ego
    off_road_events: int = 0
    route_failures: int = 0
    wrong_exits: int = 0  # the part of route_failures that took another exit (a command ignored)
    timeouts: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def driving_score(completion: float, off_track_events: int, unstuck: int,
                  infractions: Mapping[Infraction, int] | None = None) -> float:
    """CARLA-style: completion x product of per-infraction penalty factors (module docstring)."""
    penalty = OFF_TRACK_FACTOR**off_track_events * UNSTUCK_FACTOR**unstuck
    for kind, count in (infractions or {}).items():
        penalty *= INFRACTION_FACTORS[Infraction(kind)] ** int(count)
    return float(completion) * penalty


def finish_episode(
    seed: int, tracker: EpisodeTracker, info: dict[str, Any], completion: float,
    outcome: Outcome | None = None,
) -> EpisodeResult:
    """The metrics row; a typed ``outcome`` of success means the whole route was driven."""
    if outcome is Outcome.SUCCESS:
        completion = 1.0
    typed = tracker.infractions
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
        score=round(driving_score(completion, tracker.off_track_events, unstuck, typed), 4),
        outcome=None if outcome is None else Outcome(outcome).value,
        collisions=typed[Infraction.COLLISION] + typed[Infraction.STRUCK],
        collisions_struck=typed[Infraction.STRUCK],
        off_road_events=typed[Infraction.OFF_ROAD],
        route_failures=typed[Infraction.WRONG_EXIT] + typed[Infraction.ROUTE_DEVIATION],
        wrong_exits=typed[Infraction.WRONG_EXIT],
        timeouts=typed[Infraction.TIMEOUT],
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
    typed = [r for r in ok if r.outcome is not None]
    if typed:  # envs with typed outcomes (traffic): success rate and infractions per episode
        out["success_rate"] = sum(r.outcome == Outcome.SUCCESS for r in typed) / len(typed)
        for key in ("collisions", "collisions_struck", "off_road_events", "route_failures",
                    "timeouts"):
            out[f"{key}_per_episode"] = sum(getattr(r, key) for r in typed) / len(typed)
    out["laps_finished"] = len(laps)
    out["lap_time_mean"] = sum(laps) / len(laps) if laps else None
    return out
