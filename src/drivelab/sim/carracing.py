"""CarRacing-v3 seen through the drivelab contract: frames, Charles-style telemetry, unstuck.

Why a dedicated adapter rather than the generic one: the seeds' recipes need signals CarRacing
does not expose (speed, the last applied controls, the "purpose" vector, progress), a merged
``accel_brake`` action like Charles' model_0003+, and the Charles "unstuck" behaviour so that
long recordings and closed-loop evaluations never stall on a car spun out in the grass. All of
that needs privileged access to the Box2D world (``env.unwrapped``), which is fine here: the
expert and the recorder are allowed to know the truth, the learned policy only sees frames and
telemetry.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from drivelab.sim.base import Observation, SignalSpec, SimError, StepResult
from drivelab.sim.track import Track, forward_vector, relative_bearing

# pygame (imported by gymnasium's Box2D envs) must never try to open a display: recorders and
# tests run headless. setdefault keeps a caller's explicit choice.
os.environ.setdefault("SDL_VIDEODRIVER", "dummy")

import gymnasium as gym
from gymnasium.envs.box2d.car_dynamics import Car

from drivelab.sim.carracing_render import install as install_fast_road

GYM_ID = "CarRacing-v3"
FPS = 50.0
FRAME_SHAPE = (96, 96, 3)
#: CarRacing's steering joint saturates at this angle: any |steering| >= 0.4 is full lock.
STEER_LOCK_RAD = 0.4

ACTION_SPECS: tuple[SignalSpec, ...] = (
    SignalSpec(
        "steering",
        size=1,
        low=-1.0,
        high=1.0,
        description="-1 full left, +1 full right; the front wheels target this angle in "
        "radians and saturate at ±0.4 rad, so |value| >= 0.4 is full lock",
    ),
    SignalSpec(
        "accel_brake",
        size=1,
        low=-1.0,
        high=1.0,
        description="merged pedal: >0 throttle (gas = value), <0 brake (brake = -value); "
        "brake >= 0.9 locks the wheels",
    ),
)

TELEMETRY_SPECS: tuple[SignalSpec, ...] = (
    SignalSpec(
        "speed",
        unit="m/s",
        size=1,
        low=0.0,
        description="car hull speed in Box2D world units per second (1 unit ≈ 1 m)",
    ),
    SignalSpec(
        "steering",
        size=1,
        low=-1.0,
        high=1.0,
        description="steering executed on the previous step (0 after reset)",
    ),
    SignalSpec(
        "accel_brake",
        size=1,
        low=-1.0,
        high=1.0,
        description="accel_brake executed on the previous step (0 after reset)",
    ),
    SignalSpec(
        "progress",
        unit="fraction",
        size=1,
        low=0.0,
        high=1.0,
        description="fraction of the track tiles visited so far",
    ),
    SignalSpec(
        "purpose",
        unit="m, rad",
        size=2,
        description="distance and bearing (radians, positive = to the right of the car "
        "heading) to the centre-line point purpose_distance ahead of the car's nearest "
        "track point",
    ),
)


class CarRacingEnv:
    """``DrivingEnv`` over gymnasium ``CarRacing-v3`` (continuous actions, 96x96 state pixels).

    Options:
        max_steps: episode cap (truncation), 1000 like CarRacing's own time limit.
        unstuck_after_s: seconds of simulated time without a new tile before the car is put
            back on the road at the nearest track point ahead (heading of the road, at rest);
            ``None`` disables it (e.g. to score a policy exactly like stock CarRacing).
        purpose_distance: how far ahead along the centre-line (world units) the purpose target
            lies.
        lap_complete_percent: CarRacing's own lap criterion, passed through.

    Deterministic for a given reset seed: the seed fixes the track and Box2D is deterministic,
    so the same actions replay the same frames.
    """

    env_id: str = GYM_ID
    fps: float = FPS
    frame_shape: tuple[int, int, int] = FRAME_SHAPE
    #: CarRacing draws its own dashboard (speed, ABS, steering, gyro) into the frame's bottom rows;
    #: videos cut them, since their overlay shows the same controls labelled.
    dashboard_rows: int = 12
    telemetry_specs: tuple[SignalSpec, ...] = TELEMETRY_SPECS
    action_specs: tuple[SignalSpec, ...] = ACTION_SPECS

    def __init__(
        self,
        max_steps: int = 1000,
        unstuck_after_s: float | None = 4.0,
        purpose_distance: float = 30.0,
        lap_complete_percent: float = 0.95,
    ) -> None:
        if int(max_steps) < 1:
            raise SimError(f"max_steps must be >= 1, got {max_steps}")
        if unstuck_after_s is not None and not unstuck_after_s > 0:
            raise SimError(f"unstuck_after_s must be > 0 or None, got {unstuck_after_s}")
        if not purpose_distance > 0:
            raise SimError(f"purpose_distance must be > 0, got {purpose_distance}")
        self.max_steps = int(max_steps)
        self.unstuck_after_s = None if unstuck_after_s is None else float(unstuck_after_s)
        self.purpose_distance = float(purpose_distance)
        self._gym = gym.make(
            GYM_ID,
            continuous=True,
            render_mode=None,
            lap_complete_percent=lap_complete_percent,
            max_episode_steps=self.max_steps,
            disable_env_checker=True,
        )
        install_fast_road(self._gym.unwrapped)  # same frames, ~1.7x the steps/s (carracing_render)
        self._track: Track | None = None
        self._last_action = np.zeros(2, dtype=np.float32)
        self._steps = 0
        self._best_tiles = 0
        self._stall_steps = 0
        self._unstuck_count = 0
        self._off_track_steps = 0

    # ------------------------------------------------------------------ contract

    def reset(self, seed: int | None = None) -> Observation:
        obs, _ = self._gym.reset(seed=seed)
        self._track = Track.from_carracing(self._core.track)
        self._last_action = np.zeros(2, dtype=np.float32)
        self._steps = 0
        self._best_tiles = self.tiles_visited
        self._stall_steps = 0
        self._unstuck_count = 0
        self._off_track_steps = 0
        return self._observation(obs)

    def step(self, action: np.ndarray) -> StepResult:
        if self._track is None:
            raise SimError("CarRacingEnv.step() called before reset()")
        act = self._validate_action(action)
        steer, pedal = float(act[0]), float(act[1])
        gym_action = np.array([steer, max(pedal, 0.0), max(-pedal, 0.0)], dtype=np.float32)
        obs, reward, terminated, truncated, gym_info = self._gym.step(gym_action)
        self._last_action = act
        self._steps += 1

        off_track = self.off_track
        self._off_track_steps += int(off_track)
        unstuck = False
        if self.tiles_visited > self._best_tiles:
            self._best_tiles = self.tiles_visited
            self._stall_steps = 0
        else:
            self._stall_steps += 1
        if (
            self.unstuck_after_s is not None
            and not (terminated or truncated)
            and self._stall_steps >= max(1, round(self.unstuck_after_s * self.fps))
        ):
            self._unstuck()
            unstuck = True
            # The frame rendered by the step shows the stuck pose; the caller must see the new.
            obs = self._core._render("state_pixels")

        info: dict[str, Any] = {
            "off_track": off_track,
            "off_track_steps": self._off_track_steps,
            "unstuck": unstuck,
            "unstuck_count": self._unstuck_count,
            "tiles_visited": self.tiles_visited,
            "track_tiles": self.track_tiles,
            "lap_complete": bool(gym_info.get("lap_finished", False)),
            "out_of_playfield": bool(terminated and gym_info.get("lap_finished") is False),
            "steps": self._steps,
        }
        return StepResult(
            observation=self._observation(obs),
            reward=float(reward),
            terminated=bool(terminated),
            truncated=bool(truncated),
            info=info,
        )

    def close(self) -> None:
        self._gym.close()

    # ------------------------------------------------------------------ public state

    @property
    def tiles_visited(self) -> int:
        return int(self._core.tile_visited_count)

    @property
    def track_tiles(self) -> int:
        return len(self._core.track)

    @property
    def progress(self) -> float:
        return self.tiles_visited / max(self.track_tiles, 1)

    @property
    def off_track(self) -> bool:
        """True when no wheel touches a road tile (car_dynamics keeps each wheel's tiles)."""
        return all(not w.tiles for w in self._core.car.wheels)

    @property
    def steps(self) -> int:
        return self._steps

    @property
    def unstuck_count(self) -> int:
        return self._unstuck_count

    # ------------------------------------------------------------------ privileged helpers
    # Ground truth for the expert and for diagnostics. A learned policy must not use these:
    # it gets frames and telemetry only.

    @property
    def track(self) -> Track:
        """Privileged: the centre-line geometry of the current track."""
        if self._track is None:
            raise SimError("no track yet: call reset() first")
        return self._track

    @property
    def car_position(self) -> np.ndarray:
        """Privileged: hull centre (x, y) in world units."""
        p = self._core.car.hull.position
        return np.array([p[0], p[1]], dtype=np.float64)

    @property
    def car_angle(self) -> float:
        """Privileged: hull heading (radians, forward = (-sin a, cos a))."""
        return float(self._core.car.hull.angle)

    @property
    def car_velocity(self) -> np.ndarray:
        """Privileged: hull linear velocity (vx, vy) in world units per second."""
        v = self._core.car.hull.linearVelocity
        return np.array([v[0], v[1]], dtype=np.float64)

    @property
    def car_yaw_rate(self) -> float:
        """Privileged: hull angular velocity (rad/s, positive = counter-clockwise = left)."""
        return float(self._core.car.hull.angularVelocity)

    @property
    def car_speed(self) -> float:
        return float(np.linalg.norm(self.car_velocity))

    @property
    def forward_speed(self) -> float:
        """Privileged: velocity component along the car heading (negative when sliding back)."""
        return float(self.car_velocity @ forward_vector(self.car_angle))

    @property
    def wheel_speeds(self) -> np.ndarray:
        """Privileged: rolling speed (omega * radius, world units/s) of the wheels, ordered
        front-left, front-right, rear-left, rear-right; compare with ``forward_speed`` to see
        wheel spin (rear wheels are driven) or locked brakes."""
        return np.array([w.omega * w.wheel_rad for w in self._core.car.wheels], np.float64)

    # ------------------------------------------------------------------ internals

    @property
    def _core(self) -> Any:
        """The unwrapped gymnasium CarRacing (Box2D world, car, tiles)."""
        return self._gym.unwrapped

    def _validate_action(self, action: np.ndarray) -> np.ndarray:
        act = np.asarray(action, dtype=np.float32).reshape(-1)
        if act.shape != (2,):
            raise SimError(
                f"CarRacingEnv expects 2 actions [steering, accel_brake], got shape "
                f"{np.shape(action)}"
            )
        if not np.all(np.isfinite(act)):
            raise SimError(f"CarRacingEnv got a non-finite action {act.tolist()}")
        return np.clip(act, -1.0, 1.0)

    def _purpose(self) -> np.ndarray:
        track = self.track
        pos = self.car_position
        i = track.nearest_index(pos)
        target = track.point_at(track.arc[i] + self.purpose_distance)
        distance = float(np.linalg.norm(target - pos))
        return np.array([distance, relative_bearing(pos, self.car_angle, target)], np.float32)

    def _observation(self, frame: np.ndarray) -> Observation:
        telemetry = {
            "speed": np.array([self.car_speed], dtype=np.float32),
            "steering": self._last_action[:1].copy(),
            "accel_brake": self._last_action[1:].copy(),
            "progress": np.array([self.progress], dtype=np.float32),
            "purpose": self._purpose(),
        }
        return Observation(frame=np.ascontiguousarray(frame, dtype=np.uint8), telemetry=telemetry)

    def _unstuck(self) -> None:
        """Charles' unstuck: rebuild the car at rest on the road just ahead, facing along it.

        Rebuilding (rather than moving the bodies) resets wheel spin, steering joint and skid
        state in one go, exactly like CarRacing's own start. Tiles are picked up by the contact
        listener on the next physics step.
        """
        core = self._core
        track = self.track
        i = track.index_ahead(self.car_position)
        x, y = track.points[i]
        core.car.destroy()
        core.car = Car(core.world, float(track.headings[i]), float(x), float(y))
        self._unstuck_count += 1
        self._stall_steps = 0
