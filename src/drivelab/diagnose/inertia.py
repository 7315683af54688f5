"""The inertia test (Codevilla et al. 2019): does a stopped car drive off again?

A policy that reads its own speed can learn "slow now, slow next": stopped, it predicts
"stay stopped". Every track is driven twice in one episode: from the standing start the env
begins with, and after a forced stop (the car braked to a halt ``stop_after_s`` into the
track and held there ``stop_hold_s``, the policy watching, so its history records the stop).
After each, the time until speed exceeds ``moving_speed`` is measured; no move within
``start_timeout_s`` is a failed start. The policy drives through the evaluator's own
`PolicyDriver`, so it sees exactly what `drivelab eval` gives it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from drivelab.config.diagnose_section import DiagnoseConfig
from drivelab.evaluate.drivers import DriverSpec, build_driver
from drivelab.sim import DrivingEnv, make_env
from drivelab.sim.base import Observation

#: Braking to a halt gives up after this many seconds (the car is then counted as not stopped).
BRAKE_LIMIT_S = 4.0
STOPPED_SPEED = 0.2


@dataclass
class InertiaTrack:
    """One track: seconds to move off from the start and after the forced stop (None: failed)."""

    seed: int
    start_s: float | None
    restart_s: float | None
    stopped: bool  # the forced stop happened (the car was moving and braked to a halt)


def _speed(obs: Observation) -> float:
    return float(np.asarray(obs.telemetry["speed"]).reshape(-1)[0])


class _Drive:
    """One episode on one track, stepped by the policy or by a forced brake."""

    def __init__(self, env: DrivingEnv, spec: DriverSpec, seed: int) -> None:
        self.env, self.driver = env, build_driver(spec, env)
        self.obs = env.reset(seed=seed)
        self.driver.reset(seed)
        names = [s.name for s in env.action_specs]
        self.brake = np.zeros(len(names), np.float32)
        if "accel_brake" in names:
            self.brake[names.index("accel_brake")] = -1.0
        self.done = False

    def step(self, forced: bool = False) -> None:
        action = self.driver.act(self.obs, self.env)  # the policy sees every step, forced or not
        result = self.env.step(self.brake if forced else action)
        self.obs, self.done = result.observation, result.done

    def time_to_move(self, limit_steps: int, moving: float) -> float | None:
        for step in range(limit_steps):
            if self.done:
                return None
            self.step()
            if _speed(self.obs) > moving:
                return (step + 1) / self.env.fps
        return None


def inertia_track(env_id: str, spec: DriverSpec, seed: int, config: DiagnoseConfig) -> InertiaTrack:
    """Drive one track: standing start, drive on, forced stop, restart."""
    steps = lambda seconds: max(1, round(seconds * env.fps))  # noqa: E731
    env = make_env(env_id, max_steps=100_000)
    try:
        drive = _Drive(env, spec, seed)
        start = drive.time_to_move(steps(config.start_timeout_s), config.moving_speed)
        for _ in range(steps(config.stop_after_s)):
            if drive.done:
                break
            drive.step()
        stopped = False
        if start is not None and not drive.done:
            for _ in range(steps(BRAKE_LIMIT_S)):
                drive.step(forced=True)
                if drive.done or _speed(drive.obs) < STOPPED_SPEED:
                    break
            for _ in range(steps(config.stop_hold_s)):
                if drive.done:  # a route world ends on a crash (struck while held): no restart to test
                    break
                drive.step(forced=True)
            stopped = not drive.done and _speed(drive.obs) < config.moving_speed
        restart = drive.time_to_move(steps(config.start_timeout_s), config.moving_speed) if stopped else None
        return InertiaTrack(seed, start, restart, stopped)
    finally:
        env.close()


@dataclass
class InertiaReport:
    tracks: list[InertiaTrack]
    seconds_per_track: float

    @property
    def failed_starts(self) -> int:
        return sum(t.start_s is None for t in self.tracks)

    @property
    def failed_restarts(self) -> int:
        return sum(t.stopped and t.restart_s is None for t in self.tracks)

    @property
    def stops(self) -> int:
        return sum(t.stopped for t in self.tracks)

    def to_dict(self) -> dict:
        return {"tracks": [asdict(t) for t in self.tracks], "failed_starts": self.failed_starts,
                "failed_restarts": self.failed_restarts, "forced_stops": self.stops,
                "seconds_per_track": round(self.seconds_per_track, 2)}
