"""The traffic worlds (highway-env junctions): adapter contract, scenarios, expert, infractions.

Real highway-env, small episodes: an intersection episode is ~60 decisions at 5 Hz.
"""

from __future__ import annotations

import numpy as np
import pytest
from highway_env.road.regulation import RegulatedRoad
from highway_env.vehicle.kinematics import Vehicle

from drivelab.data.collect import CollectPlan, drive_episode
from drivelab.evaluate.drivers import ExpertDriver
from drivelab.evaluate.metrics import EpisodeTracker, aggregate, finish_episode
from drivelab.evaluate.runner import drive_and_measure
from drivelab.sim import DrivingEnv, SimError, make_env, make_expert
from drivelab.sim.infractions import Infraction, Outcome, collision_cause
from drivelab.sim.traffic import TrafficEnv
from drivelab.sim.traffic_regulation import conflict_pairs, predict_constant_steering
from drivelab.sim.traffic_world import TrafficCar


@pytest.fixture(scope="module")
def intersection() -> TrafficEnv:
    env = make_env("intersection")
    yield env
    env.close()


@pytest.fixture(scope="module")
def roundabout() -> TrafficEnv:
    env = make_env("roundabout")
    yield env
    env.close()


def _drive(env: TrafficEnv, policy, limit: int = 400):
    result = None
    for _ in range(limit):
        result = env.step(np.asarray(policy(env), np.float32))
        if result.done:
            break
    return result


def test_adapter_contract(intersection: TrafficEnv, roundabout: TrafficEnv) -> None:
    for env, n_commands in ((intersection, 3), (roundabout, 4)):
        assert isinstance(env, DrivingEnv)
        assert env.fps == 5.0 and env.frame_shape == (96, 96, 3)
        assert [s.name for s in env.action_specs] == ["steering", "accel_brake"]
        obs = env.reset(seed=3)
        assert obs.frame.shape == env.frame_shape and obs.frame.dtype == np.uint8
        assert obs.frame.std() > 5, "the frame must show the road, not a blank surface"
        assert set(obs.telemetry) == {s.name for s in env.telemetry_specs}
        for spec in env.telemetry_specs:
            assert obs.telemetry[spec.name].shape == (spec.size,)
            assert obs.telemetry[spec.name].dtype == np.float32
        command = obs.telemetry["command"]
        assert command.shape == (n_commands,) and command.sum() == 1.0
        assert np.all(np.isfinite(obs.telemetry["purpose"])) and obs.telemetry["purpose"][0] > 5
        result = env.step(np.array([0.25, -0.5]))
        np.testing.assert_allclose(result.observation.telemetry["steering"], [0.25])
        np.testing.assert_allclose(result.observation.telemetry["accel_brake"], [-0.5])
        with pytest.raises(SimError, match="2 actions"):
            env.step(np.zeros(3))
        with pytest.raises(SimError, match="non-finite"):
            env.step(np.array([np.nan, 0.0]))


def test_same_seed_same_scenario(intersection: TrafficEnv) -> None:
    def scene(seed: int):
        obs = intersection.reset(seed=seed)
        for _ in range(5):
            obs = intersection.step(np.array([0.0, 0.1])).observation
        cars = sorted(tuple(np.round(v.position, 6)) for v in intersection.world.road.vehicles)
        return intersection.command, cars, obs.frame

    a, b, c = scene(7), scene(7), scene(8)
    assert a[0] == b[0] and a[1] == b[1] and np.array_equal(a[2], b[2])
    assert a[1] != c[1]
    commands = set()
    for seed in range(12):
        intersection.reset(seed=seed)
        commands.add(intersection.command)
    assert commands == {"left", "straight", "right"}, "destinations are drawn over all exits"


@pytest.mark.parametrize(("name", "seeds"), [("intersection", (0, 1)), ("roundabout", (0,))])
def test_expert_reaches_its_exit(name: str, seeds: tuple[int, ...]) -> None:
    env = make_env(name)
    expert = make_expert(env)
    try:
        for seed in seeds:
            env.reset(seed=seed)
            expert.reset()
            seen: list[Infraction] = []
            for _ in range(400):
                result = env.step(expert.act(env))
                seen += result.infractions
                if result.done:
                    break
            assert result.outcome is Outcome.SUCCESS, (seed, result.info)
            assert seen == [], "the expert keeps to the road (lane joins are not off-road)"
            assert result.terminated and not result.truncated
            assert result.observation.telemetry["progress"][0] == 1.0
    finally:
        env.close()


def test_collision_is_detected(intersection: TrafficEnv) -> None:
    intersection.reset(seed=0)
    ego, road = intersection.ego, intersection.world.road
    lane = road.network.get_lane(ego.lane_index)
    s = lane.local_coordinates(ego.position)[0]
    parked = TrafficCar.make_on_lane(road, ego.lane_index, s + 12.0, speed=0.0)
    parked.route = [ego.lane_index]  # a car without a route is cleared by the intersection
    road.vehicles.append(parked)
    result = _drive(intersection, lambda env: [0.0, 1.0], 30)
    assert result.infractions == (Infraction.COLLISION,), "the ego drove into a standing car"
    assert result.outcome is Outcome.COLLISION and result.terminated


def test_a_car_driving_into_the_stopped_ego_is_its_collision(intersection: TrafficEnv) -> None:
    intersection.reset(seed=0)
    ego, road = intersection.ego, intersection.world.road
    _drive(intersection, lambda env: [0.0, -1.0], 15)  # the ego brakes to a standstill
    assert ego.speed == 0.0 and not ego.crashed
    lane = road.network.get_lane(ego.lane_index)
    s = lane.local_coordinates(ego.position)[0]
    # a car without a driver model (no IDM braking) rolls into the ego from behind at 10 m/s
    rammer = Vehicle(road, lane.position(s - 12.0, 0.0), lane.heading_at(s - 12.0), speed=10.0)
    rammer.route = [ego.lane_index]  # a car without a route is cleared by the intersection
    road.vehicles.append(rammer)
    result = _drive(intersection, lambda env: [0.0, -1.0], 30)
    assert result.infractions == (Infraction.STRUCK,)
    assert result.outcome is Outcome.COLLISION and result.terminated
    tracker = EpisodeTracker(fps=5)
    tracker.update(0.0, {}, 0.0, result.infractions)
    row = finish_episode(0, tracker, {}, 0.2, result.outcome)
    assert (row.collisions, row.collisions_struck, row.score) == (1, 1, pytest.approx(0.2 * 0.6))


@pytest.mark.parametrize(("ego", "other", "cause"), [
    # (position, velocity) of the ego and of the other car at the impact
    (((0, 0), (10, 0)), ((5, 0), (3, 0)), Infraction.COLLISION),  # rear-ends a slower car
    (((0, 0), (3, 0)), ((-5, 0), (10, 0)), Infraction.STRUCK),  # rear-ended while slower
    (((0, 0), (0.2, 0)), ((5, 0), (0, 0)), Infraction.STRUCK),  # creeping: counts as stopped
    (((0, 0), (8, 0)), ((3, 2), (0, -6)), Infraction.COLLISION),  # drives into a crossing car
    (((0, 0), (8, 0)), ((0, 3), (0, -6)), Infraction.STRUCK),  # a car drives into its side
])
def test_collision_cause_from_closing_speeds(ego, other, cause) -> None:
    assert collision_cause(*(np.array(x, float) for x in (*ego, *other))) is cause


def test_wrong_exit_fails_the_route() -> None:
    env = make_env("intersection:exit=left,density=0")
    expert = make_expert(env)
    env.reset(seed=0)
    env.ego.exit_index = 2  # told "right", while the route the expert follows goes left
    result = _drive(env, expert.act)
    env.close()
    assert Infraction.WRONG_EXIT in result.infractions
    assert result.outcome is Outcome.ROUTE_FAILURE and result.terminated


def test_leaving_the_road_and_the_route() -> None:
    env = make_env("intersection:exit=right,density=0")
    env.reset(seed=0)
    seen: list[Infraction] = []
    result = None
    for _ in range(100):
        result = env.step(np.array([-0.4, 0.4]))  # veer left off the approach road
        seen += result.infractions
        if result.done:
            break
    env.close()
    assert Infraction.OFF_ROAD in seen
    assert result.outcome is Outcome.ROUTE_FAILURE


def test_timeout(intersection: TrafficEnv) -> None:
    env = make_env("intersection:duration=2")
    env.reset(seed=0)
    result = _drive(env, lambda e: [0.0, -1.0], 50)
    env.close()
    assert env.steps == 10 and result.truncated and not result.terminated
    assert result.infractions == (Infraction.TIMEOUT,) and result.outcome is Outcome.TIMEOUT
    with pytest.raises(SimError, match="after the episode ended"):
        env.step(np.zeros(2))


def test_default_time_limit_follows_the_route_length() -> None:
    """0.4 s per metre of route, at least 30 s: the intersection keeps 30 s, the roundabout's
    4th exit (177 m) gets 71 s; an explicit duration wins."""
    for name, low, high in (("intersection:exit=right,density=0", 30.0, 30.0),
                            ("roundabout:exit=exit1,density=0", 30.0, 30.0),
                            ("roundabout:exit=exit4,density=0", 70.0, 72.0),
                            ("roundabout:exit=exit4,density=0,duration=11", 11.0, 11.0)):
        env = make_env(name)
        env.reset(seed=0)
        env.close()
        assert low <= env.duration <= high, (name, env.duration)


def test_driving_score_counts_typed_infractions(intersection: TrafficEnv) -> None:
    tracker = EpisodeTracker(fps=5)
    tracker.update(0.0, {}, 3.0, (Infraction.OFF_ROAD,))
    tracker.update(0.0, {}, 3.0, (Infraction.COLLISION,))
    row = finish_episode(1, tracker, {}, 0.5, Outcome.COLLISION)
    assert row.score == pytest.approx(0.5 * 0.65 * 0.60)
    assert (row.collisions, row.off_road_events, row.outcome) == (1, 1, "collision")
    driven = drive_and_measure(intersection, ExpertDriver(intersection), 1, 400)
    assert driven.outcome == "success" and driven.score == 1.0 and driven.completion == 1.0
    agg = aggregate([row, driven])
    assert agg["success_rate"] == 0.5 and agg["collisions_per_episode"] == 0.5


def test_unknown_scenario_or_option_is_one_line() -> None:
    for name, words in [
        ("roundabut", ["intersection", "roundabout"]),
        ("intersection:densty=2", ["densty", "density", "decision_hz"]),
        ("intersection:density=lots", ["density", "number"]),
        ("roundabout:exit=left", ["exit1", "exit4"]),
        ("intersection:decision_hz=0", ["decision_hz"]),
        ("intersection:density", ["name=value"]),
    ]:
        with pytest.raises(SimError) as err:
            make_env(name)
        message = str(err.value)
        assert "\n" not in message and len(message) < 300
        assert all(w in message for w in words), message
    with pytest.raises(SimError, match="frame_size"):
        make_env("intersection", frame_size=8)


def test_cheap_regulator_matches_highway_env(intersection: TrafficEnv) -> None:
    """Same conflicting pairs as the stock deep-copy regulator, on real traffic."""
    checked = 0
    for seed in (2, 5):
        intersection.reset(seed=seed)
        for step in range(30):
            intersection.step(np.array([0.0, 0.0 if step < 10 else -1.0]))
            if intersection.world.vehicle.crashed:
                break
            road = intersection.world.road
            road.act()  # the regulator runs right after the cars chose their actions
            vehicles = list(road.vehicles)
            pos, hdg = predict_constant_steering(vehicles)
            fast = set(conflict_pairs(vehicles, pos, hdg))
            stock = {(i, j) for i in range(len(vehicles)) for j in range(i + 1, len(vehicles))
                     if RegulatedRoad.is_conflict_possible(vehicles[i], vehicles[j])}
            assert fast == stock
            checked += len(stock)
    assert checked > 0


def test_collect_with_dart_noise_labels_the_expert_action(intersection: TrafficEnv) -> None:
    expert = make_expert(intersection)
    plan = CollectPlan(env="intersection", seed=0, noise=0.3, noise_hold=3, max_steps=40)
    record = drive_episode(intersection, plan, 0, expert)
    assert record.info["env_id"] == "TrafficIntersection-v0"
    assert 0 < record.info["perturbed_steps"] < len(record.frames)
    assert record.telemetry["command"].shape == (len(record.frames), 3)
    # the label is what the expert intends in the state reached (DAgger-style), not the executed
    # noisy action: relabelling a recorded state gives the same label
    assert np.all(np.abs(record.actions["steering"]) <= 1.0)


def test_collect_train_eval_end_to_end(tmp_path) -> None:
    """Every verb unchanged on the traffic world: collect (2 workers), train, eval with baselines."""
    import json

    from conftest import run_cli_here

    data, runs, report = tmp_path / "int.zarr", tmp_path / "runs", tmp_path / "eval.json"
    done = run_cli_here("collect", "--env", "intersection:density=0.5", "--episodes", "2",
                        "--val-episodes", "1", "--workers", "2", "--max-steps", "25",
                        "--out", str(data))
    assert done.returncode == 0, done.stderr
    done = run_cli_here("train", "configs/traffic/intersection_pilotnet.yaml",
                        f"data.path={data}", "data.cache=none", "train.max_batches=3",
                        "train.val_every=3", "train.checkpoint_every=3", "train.log_every=3",
                        "train.warmup_batches=1", "train.batch_size=8", "--runs", str(runs),
                        "--no-progress")
    assert done.returncode == 0, done.stderr
    done = run_cli_here("eval", "intersection_pilotnet_v1", "--runs", str(runs), "--baseline",
                        "expert", "--env", "intersection", "--episodes", "1", "--max-steps", "25",
                        "--json", str(report))
    assert done.returncode == 0, done.stderr
    assert "route outcomes" in done.stdout and "struck" in done.stdout  # collisions by cause
    drivers = json.loads(report.read_text())["drivers"]
    assert [d["driver"] for d in drivers] == ["intersection_pilotnet_v1", "expert"]
    assert all("success_rate" in d["aggregate"] for d in drivers)
    assert {row["outcome"] for d in drivers for row in d["episodes"]} <= {
        "success", "collision", "route_failure", "timeout"}


def test_the_default_noise_hold_is_the_same_time_in_both_worlds() -> None:
    """DART's default hold is 0.2 s: CarRacing's 10 steps at 50 fps stay as they were, while the
    traffic world's 5 decisions/s get 1 step (10 steps were 2 s there, and crashed the expert)."""
    from drivelab.data.collect import noise_hold_steps
    from drivelab.sim import make_env

    for name, steps in (("carracing", 10), ("intersection", 1)):
        env = make_env(name)
        try:
            assert noise_hold_steps(None, env.fps) == steps
        finally:
            env.close()
    assert noise_hold_steps(3, 5.0) == 3  # a given hold is kept
