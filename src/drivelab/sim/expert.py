"""A privileged CarRacing driver: the demonstrator the imitation pipeline learns from.

It reads the ground truth (track centre-line, car pose and velocity) through the env's
privileged helpers and combines two classic controllers:

* **pure pursuit** steering towards a point on the road ahead, with a lookahead that grows with
  speed (short lookahead = precise at low speed, long lookahead = stable at high speed);
* a **speed profile** from the upcoming curvature: the grip-limited corner speed
  ``sqrt(a_lat / |k|)``, propagated backwards with a braking deceleration so the car brakes
  *before* a bend rather than in it.

Recovery from odd poses (the recorder injects perturbations, unstuck teleports the car) falls out
of the same law: pursuit always aims at the road ahead of the nearest centre-line point, and the
target speed drops when the car points away from it or has no wheel on the road.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from drivelab.sim.carracing import STEER_LOCK_RAD, CarRacingEnv
from drivelab.sim.track import Track, forward_vector, relative_bearing, right_vector

#: Distance between CarRacing's front and rear axles (car_dynamics WHEELPOS, SIZE = 0.02).
WHEELBASE = (80 + 82) * 0.02
#: Distance from the hull origin forward to the front axle.
FRONT_AXLE = 80 * 0.02


@dataclass(frozen=True)
class ExpertConfig:
    """Tuning of :class:`CarRacingExpert` (world units, seconds; tuned on real episodes)."""

    lookahead_min: float = 6.0
    lookahead_per_speed: float = 0.18  # seconds: lookahead = min + this * speed
    lookahead_max: float = 30.0
    lateral_accel: float = 150.0  # usable cornering acceleration on the road
    brake_decel: float = 90.0  # deceleration assumed when planning braking zones
    top_speed: float = 140.0
    min_speed: float = 12.0  # never plan slower than this on the road
    curvature_window: float = 10.0  # arc length (each side) the curvature is averaged over
    preview_s: float = 0.2  # look this far ahead (in time) into the speed profile
    throttle_gain: float = 0.2  # pedal per (unit/s) of speed error
    brake_gain: float = 0.05
    max_brake: float = 0.8  # >= 0.9 locks the wheels and kills steering
    spin_range: tuple[float, float] = (3.0, 8.0)  # rear wheel spin (units/s): gas fades out
    slip_range: tuple[float, float] = (0.1, 0.25)  # body slip angle (rad): gas fades out
    countersteer: float = 1.0  # share of the front-axle slip angle steered out
    off_track_speed: float = 35.0  # target speed with no wheel on the road
    recover_speed: float = 25.0  # target speed while pointing far away from the road ahead
    recover_bearing: float = 0.6  # radians of bearing error that count as "pointing away"
    yaw_damping: float = 4.0  # steering per unit of yaw-rate error (scaled to wheel angle)
    yaw_deadband: float = 1.0  # rad/s of yaw-rate error left to pure pursuit
    heading_range: tuple[float, float] = (0.15, 0.7)  # heading error (rad): speed fades out
    relocate_distance: float = 40.0  # tracked centre-line point this far away: search afresh
    lock_range: tuple[float, float] = (3.0, 10.0)  # front wheel lock (units/s): brake fades


class CarRacingExpert:
    """Privileged controller for :class:`CarRacingEnv`.

    ``act(env)`` returns float32 ``[steering, accel_brake]`` in [-1, 1]. Steering is the wheel
    angle in radians, so it stays within ±0.4 (CarRacing's full lock; larger values would act
    the same). The per-track speed profile is computed on the first ``act`` of each new track
    and cached, so a call is a handful of numpy operations on a few hundred points (~0.2 ms).

    Stateful across steps only to track the car's place on the road; call ``reset()`` at the
    start of each episode.
    """

    def __init__(self, config: ExpertConfig | None = None) -> None:
        self.config = config or ExpertConfig()
        self._track: Track | None = None
        self._profile: np.ndarray | None = None
        self._index: int | None = None
        self._unstuck_seen = 0

    def reset(self) -> None:
        """Forget the cached track (call at episode start; ``act`` also detects a new track)."""
        self._track = None
        self._profile = None
        self._index = None
        self._unstuck_seen = 0

    def act(self, env: CarRacingEnv) -> np.ndarray:
        track = env.track
        if track is not self._track:
            self._track = track
            self._profile = self.speed_profile(track)
            self._index = None
        pos = env.car_position
        index = self._locate(env, track, pos)
        along = track.along(pos, index)
        heading_error = abs(relative_bearing(pos, env.car_angle, pos + track.tangent(index)))
        steering, bearing = self._steer(env, track, along)
        pedal = self._pedal(env, track, along, bearing, heading_error)
        return np.array([steering, pedal], dtype=np.float32)

    def _steer(self, env: CarRacingEnv, track: Track, along: float) -> tuple[float, float]:
        """Front wheel angle (radians, positive = right) and the bearing of the pursuit target.

        Pure pursuit is computed from the front axle's direction of travel: when the tail steps
        out the front axle moves at an angle to the body, and steering along it is the
        countersteer. A yaw-rate term damps the rotation pure pursuit cannot see (the steering
        joint needs ~0.13 s from lock to centre, so a spinning car must be caught early).
        """
        cfg = self.config
        pos, angle, velocity = env.car_position, env.car_angle, env.car_velocity
        speed = float(np.linalg.norm(velocity))
        fwd, right = forward_vector(angle), right_vector(angle)
        yaw_rate = env.car_yaw_rate
        lookahead = min(cfg.lookahead_max, cfg.lookahead_min + cfg.lookahead_per_speed * speed)
        target = track.point_at(along + lookahead)
        bearing = relative_bearing(pos, angle, target)
        if abs(bearing) > math.pi / 2:  # target behind: turn at full lock towards it
            return math.copysign(STEER_LOCK_RAD, bearing), bearing
        distance = max(float(np.linalg.norm(target - pos)), 1e-6)
        curvature = 2.0 * math.sin(bearing) / distance  # of the pursuit arc, positive = right
        wheel = math.atan(WHEELBASE * curvature)
        forward_speed = float(velocity @ fwd)
        if forward_speed > 2.0:
            front = velocity + yaw_rate * FRONT_AXLE * np.array([-fwd[1], fwd[0]])
            wheel += cfg.countersteer * math.atan2(float(front @ right), float(front @ fwd))
            # Yaw rate is counter-clockwise positive; the arc wants -speed * curvature.
            # Only the excess beyond a dead band is damped: inside it the term would fight the
            # rate-limited steering joint and make the wheel chatter in ordinary corners.
            yaw_error = yaw_rate + forward_speed * curvature
            yaw_error = math.copysign(max(abs(yaw_error) - cfg.yaw_deadband, 0.0), yaw_error)
            wheel += cfg.yaw_damping * yaw_error * WHEELBASE / forward_speed
        return float(np.clip(wheel, -STEER_LOCK_RAD, STEER_LOCK_RAD)), bearing

    def _pedal(
        self,
        env: CarRacingEnv,
        track: Track,
        along: float,
        bearing: float,
        heading_error: float,
    ) -> float:
        """accel_brake from the speed profile, with traction control and ABS."""
        cfg = self.config
        velocity = env.car_velocity
        speed = float(np.linalg.norm(velocity))
        fwd, right = forward_vector(env.car_angle), right_vector(env.car_angle)
        forward_speed = float(velocity @ fwd)

        v_target = self._target_speed(track, along, speed)
        # Pointing off the road: slow down while the heading comes back, more the worse it is.
        v_target = cfg.recover_speed + (v_target - cfg.recover_speed) * _fade(
            heading_error, cfg.heading_range
        )
        if env.off_track:
            v_target = min(v_target, cfg.off_track_speed)
        if abs(bearing) > cfg.recover_bearing:
            v_target = min(v_target, cfg.recover_speed)
        err = v_target - forward_speed
        if err > 0:
            # Traction control: a spinning rear wheel has no side grip left, so the gas fades
            # out as the driven wheels outrun the car or as the body slides sideways.
            spin = float(env.wheel_speeds[2:].mean()) - forward_speed
            slip = abs(math.atan2(float(velocity @ right), max(forward_speed, 1e-6)))
            grip = _fade(spin, cfg.spin_range)
            if speed > 5:
                grip = min(grip, _fade(slip, cfg.slip_range))
            return min(1.0, cfg.throttle_gain * err) * grip
        # ABS: a locked front wheel cannot steer, so the brake fades as it locks.
        lock = forward_speed - float(env.wheel_speeds[:2].mean())
        return max(-cfg.max_brake, cfg.brake_gain * err) * _fade(lock, cfg.lock_range)

    def speed_profile(self, track: Track) -> np.ndarray:
        """Planned speed [N] per centre-line point: grip limit, then braking zones before bends."""
        cfg = self.config
        n = len(track)
        seg = np.diff(track.arc)
        step = float(np.mean(seg))
        half = max(1, round(cfg.curvature_window / step))
        k = np.abs(track.curvature())
        kernel = np.ones(2 * half + 1) / (2 * half + 1)
        k_smooth = np.convolve(np.concatenate([k[-half:], k, k[:half]]), kernel, mode="valid")
        v = np.sqrt(cfg.lateral_accel / np.maximum(k_smooth, 1e-6))
        v = np.clip(v, cfg.min_speed, cfg.top_speed)
        # Backward pass (twice round the loop so the seam is consistent): v_i <= sqrt(v_{i+1}^2
        # + 2 a ds), i.e. the car can always brake down to the next point's speed in time.
        for _ in range(2):
            for i in range(n - 1, -1, -1):
                nxt = v[(i + 1) % n]
                v[i] = min(v[i], math.sqrt(nxt * nxt + 2.0 * cfg.brake_decel * seg[i]))
        return v

    def _locate(self, env: CarRacingEnv, track: Track, pos: np.ndarray) -> int:
        """Index of the centre-line point the car is on, tracked from step to step so a car
        off the road in a hairpin is not mistaken for one on the stretch after it. A fresh
        global search happens at the start, after an unstuck teleport, and when the tracked
        point is implausibly far."""
        teleported = env.unstuck_count != self._unstuck_seen
        self._unstuck_seen = env.unstuck_count
        i = None
        if self._index is not None and not teleported:
            i = track.nearest_index_from(pos, self._index)
            if float(np.linalg.norm(track.points[i] - pos)) > self.config.relocate_distance:
                i = None
        if i is None:
            i = track.nearest_index(pos)
        self._index = i
        return i

    def _target_speed(self, track: Track, along: float, speed: float) -> float:
        assert self._profile is not None
        s = along + self.config.preview_s * speed
        i = int(np.searchsorted(track.arc, s % track.length, side="right")) - 1
        return float(self._profile[min(max(i, 0), len(track) - 1)])


def _fade(value: float, bounds: tuple[float, float]) -> float:
    """1 below ``bounds[0]``, 0 above ``bounds[1]``, linear in between."""
    lo, hi = bounds
    return float(np.clip((hi - value) / (hi - lo), 0.0, 1.0))
