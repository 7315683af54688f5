"""highway-env's junctions seen through the drivelab contract: frames, route command, infractions.

The world itself is configured in `traffic_world` (drivelab's subclasses); this adapter turns it
into a ``DrivingEnv``: an ego-centred RGB frame, ``steering`` and ``accel_brake`` actions like
CarRacing's, telemetry a policy may see (speed, last controls, route progress, Charles'
``purpose`` vector and the discrete route ``command``) and typed infractions on each step.
Everything a planner needs beyond that (other cars, the route geometry) is reachable only
through the privileged properties at the bottom, which the expert reads and a policy never does.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from drivelab.sim.base import Observation, SignalSpec, SimError, StepResult
from drivelab.sim.infractions import Infraction, Outcome
from drivelab.sim.traffic_options import Scenario, TrafficOptions, exit_index, resolve
from drivelab.sim.traffic_route import Path, bearing

#: Steering angle (rad) at steering = ±1, and acceleration (m/s²) at accel_brake = ±1.
STEER_RANGE = math.pi / 4
ACCEL_RANGE = 5.0
#: Simulation sub-steps per second (highway-env's default 15, rounded up to the decision rate).
SIM_HZ = 15
#: Metres beyond a lane's edge the ego's centre must be to count as off the road.
OFF_ROAD_MARGIN = 1.0
#: Metres from the route centre-line beyond which the route counts as failed.
DEVIATION_M = 8.0

#: Seconds a route gets per metre (CARLA scenario_runner's route timeout allowance).
SECONDS_PER_METRE = 0.4


def route_duration(scenario: Scenario, options: TrafficOptions, route_m: float) -> float:
    """The episode's time limit: the ``duration`` option if given, else what a careful driver
    needs for this route: ``SECONDS_PER_METRE`` of its length, at least the scenario's
    ``duration`` (30 s). One fixed limit for routes from 64 m (1st roundabout exit) to 177 m
    (4th) gave the short ones 0.6 s/m and the long ones 0.23 s/m: the long routes timed out
    whenever the ring was busy. The intersection's routes (68-80 m) keep 30 s (up to 32 s)."""
    if options.duration is not None:
        return float(options.duration)
    return max(scenario.duration, SECONDS_PER_METRE * route_m)


ACTION_SPECS: tuple[SignalSpec, ...] = (
    SignalSpec("steering", size=1, low=-1.0, high=1.0,
               description=f"front wheel angle / {STEER_RANGE:.3f} rad; positive turns right "
               "on the frame"),
    SignalSpec("accel_brake", size=1, low=-1.0, high=1.0,
               description=f"acceleration / {ACCEL_RANGE:g} m/s²: > 0 speeds up, < 0 brakes "
               "(to a stop: no reverse)"),
)


def telemetry_specs(scenario: Scenario) -> tuple[SignalSpec, ...]:
    return (
        SignalSpec("speed", unit="m/s", size=1, low=0.0, high=20.0,  # EgoCar.MAX_SPEED
                   description="ego speed"),
        SignalSpec("steering", size=1, low=-1.0, high=1.0,
                   description="steering executed on the previous step (0 after reset)"),
        SignalSpec("accel_brake", size=1, low=-1.0, high=1.0,
                   description="accel_brake executed on the previous step (0 after reset)"),
        SignalSpec("progress", unit="fraction", size=1, low=0.0, high=1.0,
                   description="fraction of the route to the destination driven so far"),
        SignalSpec("purpose", unit="m, rad", size=2,
                   description="distance and bearing (positive = right of the heading) to the "
                   "route point purpose_distance ahead of the ego's place on its route"),
        SignalSpec("command", size=len(scenario.commands), low=0.0, high=1.0,
                   description="one-hot route command: " + ", ".join(scenario.commands)),
    )


class TrafficEnv:
    """``DrivingEnv`` over a drivelab-configured highway-env junction (see `traffic_options`).

    The reset seed fixes the scenario: initial traffic, the ego's start and its destination
    exit, and every later spawn (highway-env draws them from the env's seeded generator).
    """

    action_specs: tuple[SignalSpec, ...] = ACTION_SPECS

    def __init__(self, name: str = "intersection", **options: Any) -> None:
        self.scenario, self.options = resolve(name, **options)
        try:
            from drivelab.sim.traffic_world import TrafficIntersection, TrafficRoundabout
        except ImportError as exc:
            raise SimError(f"the traffic worlds need highway-env ({exc}): "
                           "pip install 'highway-env>=1.12'") from None

        o, sc = self.options, self.scenario
        self.env_id = sc.env_id
        self.fps = float(o.decision_hz)
        self.frame_shape = (o.frame_size, o.frame_size, 3)
        self.telemetry_specs = telemetry_specs(sc)
        self.duration = float(o.duration if o.duration is not None else sc.duration)  # reset
        self._timeout_steps = max(1, round(self.duration * o.decision_hz))
        sim_hz = o.decision_hz * math.ceil(SIM_HZ / o.decision_hz)
        config = {
            "action": {"type": "ContinuousAction", "steering_range": [-STEER_RANGE, STEER_RANGE],
                       "acceleration_range": [-ACCEL_RANGE, ACCEL_RANGE]},
            "observation": {"type": "Kinematics"},
            "policy_frequency": o.decision_hz,
            "simulation_frequency": sim_hz,
            "duration": 3600.0,  # the adapter times out itself, by step count (route_duration)
            "other_vehicles_type": "drivelab.sim.traffic_world."
            + ("IntersectionCar" if sc.name == "intersection" else "TrafficCar"),
            # highway-env spawns once per env step: per-step probability = rate / decision rate
            "spawn_probability": min(1.0, sc.spawn_per_s * o.density / o.decision_hz
                                     if o.traffic == "drivelab"
                                     else sc.stock_spawn_per_step * o.density),
            "initial_vehicle_count": round(
                (sc.initial_cars if o.traffic == "drivelab" else sc.stock_cars) * o.density),
            "arrival_distance": sc.arrival_distance,
            "exit_index": exit_index(sc, o.exit),
            "screen_width": o.frame_size,
            "screen_height": o.frame_size,
            "scaling": o.frame_size / o.view,
            "centering_position": [0.5, 0.5],
            "offscreen_rendering": True,
            # IDM cars look for their leader across lane-segment ends too (highway-env 1.12's
            # fix): without it a car rear-ends a slow ego just past a ring node
            "neighbour_vehicles_connected_lanes": True,
        }
        world_cls = TrafficIntersection if sc.name == "intersection" else TrafficRoundabout
        self._world = world_cls(config=config, render_mode="rgb_array")
        self._route: Path | None = None
        self._last_action = np.zeros(2, np.float32)
        self._steps = 0
        self._route_s = self._start_s = self._goal_s = 0.0
        self._progress = 0.0
        self._was_off = False
        self._done = False

    # ------------------------------------------------------------------ contract

    def reset(self, seed: int | None = None) -> Observation:
        self._world.reset(seed=seed)
        ego = self.ego
        lanes = [self._world.road.network.get_lane(ix) for ix in ego.route]
        self._route = Path.from_lanes(lanes)
        last = sum(ln.length for ln in lanes[:-1])
        self._goal_s = min(last + self.scenario.arrival_distance, self._route.length)
        self._route_s = self._start_s = self._route.project(ego.position)[0]
        self.duration = route_duration(self.scenario, self.options, self._goal_s - self._start_s)
        self._timeout_steps = max(1, round(self.duration * self.options.decision_hz))
        self._progress = 0.0
        self._last_action = np.zeros(2, np.float32)
        self._steps = 0
        self._was_off = False
        self._done = False
        return self._observation()

    def step(self, action: np.ndarray) -> StepResult:
        if self._route is None:
            raise SimError("TrafficEnv.step() called before reset()")
        if self._done:
            raise SimError("TrafficEnv.step() after the episode ended: call reset()")
        act = self._validate_action(action)
        _, reward, _, _, _ = self._world.step(np.array([act[1], act[0]], np.float32))
        self._last_action = act
        self._steps += 1
        ego, world = self.ego, self._world
        self._update_progress()
        infractions: list[Infraction] = []
        outcome: Outcome | None = None
        off = self._off_road()
        if off and not self._was_off:
            infractions.append(Infraction.OFF_ROAD)
        self._was_off = off
        reached = world.exit_reached(ego)
        if ego.crashed:
            infractions.append(ego.collision or Infraction.COLLISION)  # by cause
            outcome = Outcome.COLLISION
        elif world.has_arrived(ego):
            outcome, self._progress = Outcome.SUCCESS, 1.0
        elif reached is not None and reached != ego.exit_index:
            infractions.append(Infraction.WRONG_EXIT)
            outcome = Outcome.ROUTE_FAILURE
        elif self._route.project(ego.position)[1] > DEVIATION_M:
            infractions.append(Infraction.ROUTE_DEVIATION)
            outcome = Outcome.ROUTE_FAILURE
        elif self._steps >= min(self._timeout_steps, self.options.max_steps):
            infractions.append(Infraction.TIMEOUT)
            outcome = Outcome.TIMEOUT
        terminated = outcome is not None and outcome is not Outcome.TIMEOUT
        truncated = outcome is Outcome.TIMEOUT
        self._done = terminated or truncated
        info = {"steps": self._steps, "time_s": round(self._steps / self.fps, 3),
                "exit": self.scenario.commands[ego.exit_index], "off_road": off,
                "cars": len(world.road.vehicles) - 1}
        if outcome is not None:
            info["outcome"] = outcome.value
        return StepResult(self._observation(), float(reward), terminated, truncated, info,
                          infractions=tuple(infractions), outcome=outcome)

    def close(self) -> None:
        self._world.close()

    # ------------------------------------------------------------------ public state

    @property
    def steps(self) -> int:
        return self._steps

    @property
    def progress(self) -> float:
        return self._progress

    @property
    def command(self) -> str:
        """The destination's command label (``left``, ``exit2``...): what the policy is told."""
        return self.scenario.commands[self.ego.exit_index]

    # ------------------------------------------------------------------ privileged helpers
    # The simulator's state for the expert, tests and diagnostics; never for a policy.

    @property
    def world(self) -> Any:
        """Privileged: the drivelab highway-env world (road, vehicles, network)."""
        return self._world

    @property
    def ego(self) -> Any:
        """Privileged: the ego ``EgoCar`` (position, heading, speed, route)."""
        return self._world.vehicle

    @property
    def route(self) -> Path:
        """Privileged: the route centre-line from the ego's start lane to past the arrival."""
        if self._route is None:
            raise SimError("no route yet: call reset() first")
        return self._route

    @property
    def route_s(self) -> float:
        """Privileged: the ego's arc length along ``route`` (tracked, never jumps ahead)."""
        return self._route_s

    @property
    def goal_s(self) -> float:
        return self._goal_s

    # ------------------------------------------------------------------ internals

    def _validate_action(self, action: np.ndarray) -> np.ndarray:
        act = np.asarray(action, dtype=np.float32).reshape(-1)
        if act.shape != (2,):
            raise SimError(f"{self.env_id} expects 2 actions [steering, accel_brake], got shape "
                           f"{np.shape(action)}")
        if not np.all(np.isfinite(act)):
            raise SimError(f"{self.env_id} got a non-finite action {act.tolist()}")
        return np.clip(act, -1.0, 1.0)

    def _off_road(self) -> bool:
        """True when the ego's centre is on no lane at all, by more than ``OFF_ROAD_MARGIN``.

        highway-env's ``on_road`` tests only the lane picked by a heading-weighted distance,
        and its lanes do not join seamlessly (a roundabout exit starts metres off the ring),
        so a car on the tarmac read as off the road there."""
        pos = self.ego.position
        return not any(lane.on_lane(pos, margin=OFF_ROAD_MARGIN)
                       for lane in self._world.road.network.lanes_list())

    def _update_progress(self) -> None:
        """Track the ego's place on the route within a window around the last one, so a route
        that passes near itself (a roundabout's U-turn) never makes progress jump."""
        route, pos = self.route, self.ego.position
        pts, arc = route.window(self._route_s - 10.0, self._route_s + 30.0)
        if len(pts) >= 2:
            local = Path(pts, arc)
            self._route_s = max(self._route_s - 10.0, local.project(pos)[0])
        span = max(self._goal_s - self._start_s, 1e-6)
        self._progress = max(self._progress,
                             float(np.clip((self._route_s - self._start_s) / span, 0.0, 1.0)))

    def _observation(self) -> Observation:
        ego = self.ego
        target = self.route.point_at(self._route_s + self.options.purpose_distance)
        purpose = np.array([np.linalg.norm(target - ego.position),
                            bearing(ego.position, ego.heading, target)], np.float32)
        command = np.zeros(len(self.scenario.commands), np.float32)
        command[ego.exit_index] = 1.0
        frame = self._world.render()
        telemetry = {
            "speed": np.array([ego.speed], np.float32),
            "steering": self._last_action[:1].copy(),
            "accel_brake": self._last_action[1:].copy(),
            "progress": np.array([self._progress], np.float32),
            "purpose": purpose,
            "command": command,
        }
        return Observation(frame=np.ascontiguousarray(frame, dtype=np.uint8), telemetry=telemetry)
