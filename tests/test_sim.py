"""Simulator layer against the real CarRacing-v3 (rendering included), kept to a few hundred
steps in total so the file stays fast."""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import pytest

from drivelab.sim import (
    CarRacingEnv,
    CarRacingExpert,
    DrivingEnv,
    GymImageEnv,
    SimError,
    make_env,
    make_expert,
)
from drivelab.sim.track import Track, relative_bearing


@pytest.fixture
def env() -> Iterator[CarRacingEnv]:
    e = CarRacingEnv()
    yield e
    e.close()


def _act(steering: float, accel_brake: float) -> np.ndarray:
    return np.array([steering, accel_brake], dtype=np.float32)


# --------------------------------------------------------------------------- contract


def test_specs_shapes_and_dtypes(env: CarRacingEnv) -> None:
    assert isinstance(env, DrivingEnv)
    assert env.env_id == "CarRacing-v3" and env.fps == 50
    assert [s.name for s in env.action_specs] == ["steering", "accel_brake"]
    assert all(s.low == -1.0 and s.high == 1.0 for s in env.action_specs)
    names = [s.name for s in env.telemetry_specs]
    assert names == ["speed", "steering", "accel_brake", "progress", "purpose"]
    obs = env.reset(seed=3)
    assert obs.frame.shape == env.frame_shape == (96, 96, 3)
    assert obs.frame.dtype == np.uint8
    for spec in env.telemetry_specs:
        value = obs.telemetry[spec.name]
        assert value.dtype == np.float32 and value.shape == (spec.size,), spec.name
    step = env.step(_act(0.0, 0.5))
    assert set(step.observation.telemetry) == set(names)
    for key in ("off_track", "unstuck_count", "tiles_visited", "track_tiles", "lap_complete"):
        assert key in step.info
    assert step.info["track_tiles"] == env.track_tiles > 0


def test_action_mapping_gas_and_brake(env: CarRacingEnv) -> None:
    env.reset(seed=1)
    car = env._core.car
    env.step(_act(0.0, 0.6))
    assert car.wheels[2].gas > 0 and car.wheels[3].gas > 0  # rear-wheel drive
    assert all(w.brake == 0 for w in car.wheels)
    env.step(_act(0.0, -0.7))
    assert all(w.gas == 0 for w in car.wheels)
    assert all(w.brake == pytest.approx(0.7) for w in car.wheels)
    env.step(_act(-0.3, 0.0))
    assert car.wheels[0].steer == pytest.approx(0.3)  # CarRacing steers the wheels with -a[0]
    assert all(w.brake == 0 for w in car.wheels)


def test_last_applied_action_telemetry(env: CarRacingEnv) -> None:
    obs = env.reset(seed=2)
    assert obs.telemetry["steering"][0] == 0 and obs.telemetry["accel_brake"][0] == 0
    rng = np.random.default_rng(0)
    for _ in range(5):
        action = rng.uniform(-1, 1, 2).astype(np.float32)
        tel = env.step(action).observation.telemetry
        assert tel["steering"][0] == action[0] and tel["accel_brake"][0] == action[1]
    tel = env.step(_act(3.0, -2.0)).observation.telemetry  # executed = clipped
    assert (tel["steering"][0], tel["accel_brake"][0]) == (1.0, -1.0)


def test_bad_actions_and_step_before_reset() -> None:
    e = CarRacingEnv()
    try:
        with pytest.raises(SimError, match="reset"):
            e.step(_act(0, 0))
        e.reset(seed=0)
        with pytest.raises(SimError, match="2 actions"):
            e.step(np.zeros(3, np.float32))
        with pytest.raises(SimError, match="non-finite"):
            e.step(_act(math.nan, 0))
    finally:
        e.close()


def test_max_steps_truncates() -> None:
    e = CarRacingEnv(max_steps=5)
    try:
        e.reset(seed=0)
        results = [e.step(_act(0, 0.2)) for _ in range(5)]
        assert [r.truncated for r in results] == [False] * 4 + [True]
    finally:
        e.close()


def test_bad_options_rejected() -> None:
    with pytest.raises(SimError, match="max_steps"):
        CarRacingEnv(max_steps=0)
    with pytest.raises(SimError, match="unstuck_after_s"):
        CarRacingEnv(unstuck_after_s=-1)
    with pytest.raises(SimError, match="purpose_distance"):
        CarRacingEnv(purpose_distance=0)


# --------------------------------------------------------------------------- behaviour


def _rollout(e: CarRacingEnv, seed: int, actions: np.ndarray) -> list[np.ndarray]:
    frames = [e.reset(seed=seed).frame]
    frames += [e.step(a).observation.frame for a in actions]
    return frames


def test_determinism_same_seed_same_actions() -> None:
    actions = np.random.default_rng(7).uniform(-1, 1, (40, 2)).astype(np.float32)
    actions[:, 1] = np.abs(actions[:, 1])  # keep moving so the frames actually change
    a, b = CarRacingEnv(), CarRacingEnv()
    try:
        first = _rollout(a, 11, actions)
        second = _rollout(b, 11, actions)
        again = _rollout(a, 11, actions)  # a reused env replays too
    finally:
        a.close()
        b.close()
    assert not np.array_equal(first[0], first[-1])
    for x, y, z in zip(first, second, again, strict=True):
        np.testing.assert_array_equal(x, y)
        np.testing.assert_array_equal(x, z)


def test_fast_road_renderer_draws_gymnasiums_frames() -> None:
    """`sim.carracing_render` must change nothing but the time: the same frames as gymnasium's
    own renderer over an expert drive with noise (tiles change colour as they are visited, the
    start zoom animates, the car turns through every quarter), pixel for pixel."""
    import pygame

    from drivelab.sim.carracing_render import rotate

    fast, stock = CarRacingEnv(max_steps=160), CarRacingEnv(max_steps=160)
    del stock._core._render_road  # the instance's fast method; the class's own remains
    try:
        frames = []
        for env in (fast, stock):
            expert, rng = make_expert(env), np.random.default_rng(3)
            shown = [env.reset(seed=4).frame]
            for _ in range(160):
                action = np.asarray(expert.act(env), np.float32) + rng.normal(0, 0.3, 2).astype(np.float32)
                result = env.step(np.clip(action, -1, 1))
                shown.append(result.observation.frame)
                if result.done:
                    break
            frames.append(np.stack(shown))
    finally:
        fast.close()
        stock.close()
    assert frames[0].shape == frames[1].shape and len(frames[0]) > 100
    np.testing.assert_array_equal(frames[0], frames[1])
    # pygame's rotation, bit for bit, at random angles and at and near the exact quarter turns
    rng = np.random.default_rng(0)
    points = rng.uniform(-300, 300, (64, 2))
    for angle in [*rng.uniform(-20, 20, 64), 0.0, 1e-7, -1e-7, 2e-6, math.pi / 2, -math.pi, 2 * math.pi]:
        expected = [tuple(pygame.math.Vector2(*p).rotate_rad(float(angle))) for p in points.tolist()]
        assert [tuple(p) for p in rotate(points, float(angle)).tolist()] == expected


def test_off_track_detected_when_leaving_the_road(env: CarRacingEnv) -> None:
    env.reset(seed=0)
    flags = []
    for _ in range(150):
        result = env.step(_act(1.0, 0.3))  # full right lock: the car circles off the road
        flags.append(result.info["off_track"])
        if result.info["off_track"]:
            break
    assert not flags[0]
    assert flags[-1], "the car never left the road"
    assert all(not w.tiles for w in env._core.car.wheels)


def test_unstuck_teleports_a_car_held_still() -> None:
    e = CarRacingEnv(unstuck_after_s=0.5)  # 25 steps without a new tile
    try:
        e.reset(seed=4)
        start = e.car_position
        tiles = e.tiles_visited
        results = [e.step(_act(0.0, -1.0)) for _ in range(25)]
        assert [r.info["unstuck"] for r in results] == [False] * 24 + [True]
        assert results[-1].info["unstuck_count"] == e.unstuck_count == 1
        ahead = e.track.points[1]  # car started on point 0: the next point is ahead
        np.testing.assert_allclose(e.car_position, ahead, atol=1e-3)
        assert e.car_angle == pytest.approx(e.track.headings[1], abs=1e-6)
        assert e.car_speed == pytest.approx(0.0, abs=1e-6)
        assert np.linalg.norm(e.car_position - start) > 1.0
        after = e.step(_act(0.0, -1.0))
        assert not after.info["off_track"]
        assert after.info["tiles_visited"] > tiles
    finally:
        e.close()


def test_purpose_points_along_the_road(env: CarRacingEnv) -> None:
    obs = env.reset(seed=5)
    distance, bearing = obs.telemetry["purpose"]
    assert 0 < distance <= env.purpose_distance + 1e-3
    assert abs(bearing) < math.pi / 2
    track = env.track
    target = track.point_at(track.arc[0] + env.purpose_distance)
    expected = relative_bearing(env.car_position, env.car_angle, target)
    assert bearing == pytest.approx(expected, abs=1e-5)


def test_expert_makes_progress(env: CarRacingEnv) -> None:
    env.reset(seed=0)
    expert = make_expert(env)
    assert isinstance(expert, CarRacingExpert)
    expert.reset()
    off = 0
    for _ in range(150):
        action = expert.act(env)
        assert action.dtype == np.float32 and action.shape == (2,)
        assert np.all(np.abs(action) <= 1.0)
        result = env.step(action)
        off += result.info["off_track"]
    assert off == 0
    assert env.progress > 0.1
    assert result.observation.telemetry["speed"][0] > 20


# --------------------------------------------------------------------------- geometry


def test_track_geometry_on_a_circle() -> None:
    n, radius = 200, 50.0
    theta = np.linspace(0, 2 * np.pi, n, endpoint=False)
    points = np.stack([radius * np.cos(theta), radius * np.sin(theta)], axis=1)
    # Counter-clockwise travel; with forward = (-sin a, cos a) the heading equals theta.
    track = Track.from_points(points, theta)
    assert track.length == pytest.approx(2 * np.pi * radius, rel=1e-3)
    np.testing.assert_allclose(track.curvature(), 1 / radius, rtol=1e-3)
    assert track.nearest_index([radius + 3, 0.5]) == 0
    np.testing.assert_allclose(track.point_at(track.length + 1e-9), points[0], atol=1e-6)
    assert track.nearest_index_from([0.0, radius], start=10) == n // 4
    # Facing +y from the origin, a point at +x lies to the right: positive bearing.
    assert relative_bearing(np.zeros(2), 0.0, np.array([1.0, 0.0])) == pytest.approx(math.pi / 2)


# --------------------------------------------------------------------------- registry


@pytest.mark.parametrize("name", ["carracing", "CarRacing", "CARRACING", "CarRacing-v3"])
def test_make_env_carracing_names(name: str) -> None:
    e = make_env(name, max_steps=10)
    try:
        assert isinstance(e, CarRacingEnv) and e.max_steps == 10
    finally:
        e.close()


def test_make_env_unknown_id() -> None:
    with pytest.raises(SimError, match=r"unknown environment 'NoSuchCar-v0'.*carracing"):
        make_env("NoSuchCar-v0")
    with pytest.raises(SimError, match="unknown option"):
        make_env("carracing", wheels=5)


def test_make_env_rejects_non_image_env() -> None:
    with pytest.raises(SimError, match=r"CartPole-v1 has observation space Box\(shape=\(4,\)"):
        make_env("CartPole-v1")


def test_generic_adapter_on_carracing() -> None:
    e = make_env("CarRacing-v3", generic=True, max_steps=3)
    try:
        assert isinstance(e, GymImageEnv) and isinstance(e, DrivingEnv)
        assert [s.name for s in e.action_specs] == ["action_0", "action_1", "action_2"]
        assert [(s.low, s.high) for s in e.action_specs] == [(-1, 1), (0, 1), (0, 1)]
        assert e.telemetry_specs == () and e.frame_shape == (96, 96, 3) and e.fps == 50
        obs = e.reset(seed=0)
        assert obs.frame.shape == (96, 96, 3) and obs.frame.dtype == np.uint8
        assert obs.telemetry == {}
        results = [e.step(np.array([0.0, 1.0, 0.0], np.float32)) for _ in range(3)]
        assert results[-1].truncated and results[-1].info["steps"] == 3
        with pytest.raises(SimError, match="no expert driver for env CarRacing-v3"):
            make_expert(e)
    finally:
        e.close()
