"""drivelab's configuration of highway-env's junction worlds, as subclasses (nothing patched).

highway-env 1.12 taken as is does not make a driving task a policy can be judged on (issue 31):
with continuous actions the ego is a plain ``Vehicle`` with no route, the intersection ends at
*any* exit and the roundabout never ends, the roundabout's reset crashes, IDM cars back up when
they overshoot a stop, spawns happen per decision (so a faster decision rate means denser
traffic), and the regulator deep-copies every car pair twice a second. Each class below changes
one of those things and says why; the installed library stays untouched.

Coordinates are highway-env's: x right, y *down* on the rendered frame, heading ``h`` means the
direction ``(cos h, sin h)``, so a positive steering angle turns right on the picture.
"""

from __future__ import annotations

import itertools
import os

os.environ.setdefault("SDL_VIDEODRIVER", "dummy")  # pygame must never open a window

import numpy as np
from gymnasium import spaces
from highway_env.envs.common.graphics import EnvViewer
from highway_env.envs.common.observation import ObservationType
from highway_env.envs.intersection_env import IntersectionEnv
from highway_env.envs.roundabout_env import RoundaboutEnv
from highway_env.vehicle.behavior import IDMVehicle
from highway_env.vehicle.kinematics import Vehicle

from drivelab.sim.infractions import Infraction, collision_cause
from drivelab.sim.traffic_regulation import FastRegulatedRoad

#: Exit nodes per scenario, in command order: the one-hot ``command`` indexes this tuple.
INTERSECTION_EXITS = ("o1", "o2", "o3")  # left, straight, right for the ego coming from o0
ROUNDABOUT_EXITS = ("exr", "nxr", "wxr", "sxr")  # 1st .. 4th exit for the ego entering south


class TrafficCar(IDMVehicle):
    """An IDM/MOBIL car that never drives backwards.

    highway-env's regulator stops a yielding car by setting its target speed to 0; IDM then
    brakes at up to 6 m/s² and the speed overshoots below zero, so the car reverses — in the
    issue's measurements that was the cause of every intersection collision with the waiting
    ego. Braking to a stop is all a road car can do.
    """

    def step(self, dt: float) -> None:
        super().step(dt)
        self.speed = max(self.speed, 0.0)


class IntersectionCar(TrafficCar):
    """The intersection's traffic: ``IntersectionEnv`` sets these on its vehicle class at every
    reset (global state shared with every other env); here they are the class's own."""

    DISTANCE_WANTED = 7.0  # low jam distance
    COMFORT_ACC_MAX = 6.0
    COMFORT_ACC_MIN = -3.0


class EgoCar(Vehicle):
    """The controlled car: kinematic bicycle, brakes to a stop (no reverse gear), has a route.

    ``route`` is the list of lane indices to the destination exit; highway-env's plain
    ``Vehicle`` (what ``ContinuousAction`` drives) has none, so the configured destination was
    silently ignored.
    """

    MIN_SPEED = 0.0
    MAX_SPEED = 20.0

    def __init__(self, road, position, heading: float = 0.0, speed: float = 0.0) -> None:
        super().__init__(road, position, heading, speed)
        self.route: list[tuple[str, str, int]] = []
        #: who caused the ego's collision, set by `JunctionRoad` at the frame of the impact
        self.collision: Infraction | None = None

    def step(self, dt: float) -> None:
        super().step(dt)
        self.speed = float(np.clip(self.speed, self.MIN_SPEED, self.MAX_SPEED))


class JunctionRoad(FastRegulatedRoad):
    """The junctions' road: records who caused the ego's collision, at the frame it happened.

    highway-env only flags both cars ``crashed``; by the end of the env step (several frames)
    the crashed cars have braked and turned, so the cause is judged here, on the simulation
    frame of the impact, from the two cars' positions and velocities
    (`infractions.collision_cause`). The other car is the nearest crashed one.
    """

    def step(self, dt: float) -> None:
        super().step(dt)
        for ego in self.vehicles:
            if isinstance(ego, EgoCar) and ego.crashed and ego.collision is None:
                hit = [v for v in self.vehicles if v is not ego and v.crashed]
                if not hit:  # crashed into a road object: nothing else moves
                    ego.collision = Infraction.COLLISION
                    continue
                other = min(hit, key=lambda v: float(np.linalg.norm(v.position - ego.position)))
                ego.collision = collision_cause(ego.position, ego.velocity, other.position,
                                                other.velocity)


class NoObservation(ObservationType):
    """drivelab renders its own frames: skip highway-env's per-step kinematics table."""

    def space(self) -> spaces.Space:
        return spaces.Box(0.0, 0.0, shape=(1,), dtype=np.float32)

    def observe(self) -> np.ndarray:
        return np.zeros(1, np.float32)


class _DrivelabWorld:
    """What both junction worlds share: route, arrival at the *right* exit, fixed spaces.

    ``config["exit_index"]`` (set by the adapter before each reset, ``None`` = draw it from the
    seed's generator over all exits) picks the destination; ``arrival_distance`` is how far down
    the exit lane the ego must drive to have arrived.
    """

    EXITS: tuple[str, ...] = ()

    def define_spaces(self) -> None:
        super().define_spaces()  # type: ignore[misc]
        self.observation_type = NoObservation(self)
        self.observation_space = self.observation_type.space()

    def render(self) -> np.ndarray | None:
        if self.viewer is None:
            self.viewer = EnvViewer(self)
            # highway-env disables drawing whenever SDL_VIDEODRIVER=dummy, which is exactly how
            # drivelab runs headless; offscreen surfaces need no display, so draw anyway.
            self.viewer.enabled = True
        return super().render()  # type: ignore[misc]

    def _automatic_rendering(self) -> None:
        """Draw nothing between decisions. Once render() has been called, highway-env redraws
        the whole road on every intermediate simulation frame (2 extra frames per step at
        5 decisions/s, 14 at 1/s; its "ignored offscreen" comment does not hold) and throws
        them away: two thirds of a step's drawing at 5 Hz (found with cProfile,
        benchmarks/traffic_world.py --profile)."""

    def step(self, action):
        out = super().step(action)  # type: ignore[misc]
        self._tow_wrecks()
        return out

    def _tow_wrecks(self) -> None:
        """Remove other cars that crashed into each other ``wreck_clear_s`` seconds ago.

        highway-env's traffic does collide among itself (11 of 50 stock intersection episodes
        in the issue's measurements) and a wreck then blocks the junction for good: the ego
        would time out through no fault of its own. The ego's own collisions end the episode.
        """
        now, ego = self.time, self.vehicle
        keep = []
        for v in self.road.vehicles:
            if v is not ego and v.crashed:
                since = getattr(v, "wreck_time", None)
                if since is None:
                    v.wreck_time = since = now
                if now - since >= self.config.get("wreck_clear_s", 1.0):
                    continue
            keep.append(v)
        self.road.vehicles = keep

    def _draw_exit(self) -> int:
        fixed = self.config.get("exit_index")
        return int(self.np_random.integers(len(self.EXITS))) if fixed is None else int(fixed)

    def _place_ego(self, lane_index: tuple[str, str, int], longitudinal: float, speed: float,
                   exit_index: int) -> EgoCar:
        lane = self.road.network.get_lane(lane_index)
        ego = EgoCar(self.road, lane.position(longitudinal, 0.0), lane.heading_at(longitudinal),
                     speed)
        ego.exit_index = exit_index
        ego.route = plan_lanes(self.road.network, lane_index, self.EXITS[exit_index])
        self.road.vehicles.append(ego)
        self.controlled_vehicles = [ego]
        return ego

    def exit_reached(self, vehicle: Vehicle) -> int | None:
        """Index (in ``EXITS``) of the exit road the car is on, past its start; else None."""
        _from, to, _ = vehicle.lane_index
        for k, node in enumerate(self.EXITS):
            if to == node or (to == node[:-1] + "s" and _from == node[:-2] + "x"):
                s, lat = vehicle.lane.local_coordinates(vehicle.position)
                if s >= 2.0 and abs(lat) <= vehicle.lane.width_at(s):
                    return k
        return None

    def has_arrived(self, vehicle: Vehicle, exit_distance: float | None = None) -> bool:
        if not isinstance(vehicle, EgoCar) or vehicle.lane_index[1] != self.EXITS[vehicle.exit_index]:
            return False
        s = vehicle.lane.local_coordinates(vehicle.position)[0]
        return s >= (self.config["arrival_distance"] if exit_distance is None else exit_distance)

    def _is_terminated(self) -> bool:
        ego = self.vehicle
        reached = self.exit_reached(ego)
        return bool(ego.crashed or self.has_arrived(ego)
                    or (reached is not None and reached != ego.exit_index))


def plan_lanes(network, start: tuple[str, str, int], goal: str) -> list[tuple[str, str, int]]:
    """The lane sequence from ``start`` to node ``goal``; on roads with several lanes, the one
    whose start is closest to the previous lane's end (the lane a car naturally flows into)."""
    nodes = network.shortest_path(start[1], goal)
    route = [start]
    for a, b in itertools.pairwise(nodes):
        end = network.get_lane(route[-1]).position(network.get_lane(route[-1]).length, 0.0)
        lanes = network.graph[a][b]
        k = int(np.argmin([np.linalg.norm(ln.position(0.0, 0.0) - end) for ln in lanes]))
        route.append((a, b, k))
    return route


class TrafficIntersection(_DrivelabWorld, IntersectionEnv):
    """The 4-way intersection: ego from the south, destination left/straight/right per seed."""

    EXITS = INTERSECTION_EXITS

    def _make_road(self) -> None:
        super()._make_road()
        road = JunctionRoad(network=self.road.network, np_random=self.np_random,
                                 record_history=False)
        self.road = road

    def _make_vehicles(self, n_vehicles: int = 10) -> None:
        for t in range(n_vehicles - 1):
            self._spawn_vehicle(np.linspace(0, 80, max(n_vehicles, 2))[t])
        hz = self.config["simulation_frequency"]
        for _ in range(3 * hz):  # let the traffic settle, as the parent does
            self.road.act()
            self.road.step(1 / hz)
        self._spawn_vehicle(60, spawn_probability=1.0, go_straight=True,
                            position_deviation=0.1, speed_deviation=0.0)
        exit_index = self._draw_exit()
        lane = ("o0", "ir0", 0)
        ego_lane = self.road.network.get_lane(lane)
        ego = self._place_ego(lane, 60.0 + 5.0 * self.np_random.normal(1.0),
                              ego_lane.speed_limit, exit_index)
        for v in list(self.road.vehicles):  # no car starts on top of the ego
            if v is not ego and np.linalg.norm(v.position - ego.position) < 20:
                self.road.vehicles.remove(v)

    def _spawn_vehicle(self, longitudinal: float = 0, position_deviation: float = 1.0,
                       speed_deviation: float = 1.0, spawn_probability: float | None = None,
                       go_straight: bool = False) -> None:
        p = self.config["spawn_probability"] if spawn_probability is None else spawn_probability
        return super()._spawn_vehicle(longitudinal, position_deviation, speed_deviation, p,
                                      go_straight)


class TrafficRoundabout(_DrivelabWorld, RoundaboutEnv):
    """The roundabout: ego enters from the south, leaves at the 1st..4th exit drawn per seed,
    with cars entering from every side over time (the stock one has four cars and no more)."""

    EXITS = ROUNDABOUT_EXITS
    ENTRIES = ("ser", "eer", "ner", "wer")

    RING = ("se", "ex", "ee", "nx", "ne", "wx", "we", "sx")

    def _make_road(self) -> None:
        """The stock roundabout has no right of way at all: entering cars merge blindly. Give
        the ring priority over the entries (and the exits over both: a car stopping on its
        way out jams the ring) and let the regulator enforce it."""
        super()._make_road()
        network = self.road.network
        for _from, to_dict in network.graph.items():
            for _to, lanes in to_dict.items():
                for lane in lanes:
                    ring = _from in self.RING and _to in self.RING
                    leaving = _to.endswith(("xs", "xr"))  # nothing to yield to on the way out
                    lane.priority = 2 if leaving else 1 if ring else 0
        self.road = JunctionRoad(network=network, np_random=self.np_random,
                                      record_history=False)

    def _rewards(self, action) -> dict[str, float]:
        # The parent tests ``action in [0, 2]`` (discrete meta-actions): on a continuous action
        # array that raises in reset(). A continuous ego has no lane-change action.
        return {
            "collision_reward": float(self.vehicle.crashed),
            "high_speed_reward": float(np.clip(self.vehicle.speed / 16.0, 0.0, 1.0)),
            "lane_change_reward": 0.0,
            "on_road_reward": float(self.vehicle.on_road),
        }

    def _make_vehicles(self) -> None:
        exit_index = self._draw_exit()
        self._place_ego(("ser", "ses", 0), 125.0, 8.0, exit_index)
        rng = self.np_random
        starts = [(("we", "sx", 1), 5.0), (("we", "sx", 0), 20.0), (("we", "sx", 0), -20.0),
                  (("eer", "ees", 0), 50.0)]
        for lane, s in starts:
            self._add_car(lane, s + 2.0 * rng.normal(), 16.0 + 2.0 * rng.normal())
        for _ in range(max(0, self.config["initial_vehicle_count"] - len(starts))):
            self._spawn_vehicle(1.0, longitudinal=float(rng.uniform(0.0, 100.0)))

    def _add_car(self, lane: tuple[str, str, int], s: float, speed: float) -> TrafficCar | None:
        car = TrafficCar.make_on_lane(self.road, lane, longitudinal=s, speed=max(speed, 0.0))
        if any(np.linalg.norm(v.position - car.position) < 15 for v in self.road.vehicles):
            return None
        car.plan_route_to(str(self.np_random.choice(self.EXITS)))
        car.randomize_behavior()
        self.road.vehicles.append(car)
        return car

    def _spawn_vehicle(self, spawn_probability: float, longitudinal: float = 0.0) -> None:
        if self.np_random.uniform() > spawn_probability:
            return
        entry = str(self.np_random.choice(self.ENTRIES))
        lane = (entry, entry[:-1] + "s", 0)
        self._add_car(lane, longitudinal + 5.0 * self.np_random.uniform(), 14.0 + 2.0 *
                      self.np_random.normal())

    def step(self, action):
        out = super().step(action)
        ego = self.vehicle
        self.road.vehicles = [  # cars that left the map (end of an exit road) disappear
            v for v in self.road.vehicles
            if v is ego or not (v.lane_index[1] in self.EXITS
                                and v.lane.local_coordinates(v.position)[0] > v.lane.length - 10)
        ]
        self._spawn_vehicle(self.config["spawn_probability"])
        return out
