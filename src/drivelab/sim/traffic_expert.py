"""A privileged planner for the traffic worlds: route following, gap keeping, yielding.

It reads the simulator's state through `TrafficEnv`'s privileged helpers (every car's position,
speed and planned lanes) and combines three cheap rules, a few milliseconds per decision:

* **pure pursuit** on the route's lane centre-line, converted to highway-env's kinematic
  bicycle (its path curvature is ``2 sin(beta) / length``);
* **IDM** (the model the other cars drive with) towards a cruise speed limited by the road's
  curvature ahead, behind the nearest car on the ego's path and behind *virtual stop points*;
* **yielding by prediction**: every other car is moved along its own planned lanes at its
  speed (or faster, up to its speed limit, if it may accelerate), and where its path comes
  close to the ego's (a conflict zone) the ego goes only if it clears the zone well before the
  car can arrive, or arrives well after it left; otherwise it puts a stop point before the zone.
  A zone the ego can no longer stop before is committed to.

No simulation copies: the other cars' paths are sampled lanes, cached per lane.
Its only memory is how long the ego has been standing (to break a mutual wait: a car whose IDM
sees the waiting ego on its exit lane waits for it), so it labels any state a policy reached
(DAgger) and tolerates the DART noise the recorder adds to the executed actions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from drivelab.sim.traffic import ACCEL_RANGE, STEER_RANGE, TrafficEnv
from drivelab.sim.traffic_route import Path, bearing, lane_points

CAR_LENGTH = 5.0
#: Below this speed (m/s) a car counts as standing (waiting cars creep).
STILL_SPEED = 1.0


@dataclass(frozen=True)
class TrafficExpertConfig:
    """Tuning of :class:`TrafficExpert` (metres, seconds, m/s²)."""

    cruise_speed: float = 10.0  # the intersection's speed limit; roundabout cars drive ~10-16
    lateral_accel: float = 3.0  # curve speed: v = sqrt(a / curvature)
    accel: float = 3.5  # IDM comfortable acceleration
    decel: float = 4.0  # IDM comfortable deceleration
    max_brake: float = 5.0  # the hardest braking the action allows
    jam_distance: float = 3.0  # IDM gap kept at standstill (bumper to bumper)
    time_headway: float = 1.2
    lookahead_min: float = 5.0
    lookahead_per_speed: float = 0.5  # s
    lookahead_max: float = 12.0
    conflict_distance: float = 3.2  # centre-line points closer than this conflict
    zone_length: float = 6.0  # a conflict zone is at most this long on either path
    pass_margin: float = 1.5  # s between the ego leaving a zone and another car reaching it
    after_margin: float = 0.8  # s between another car leaving a zone and the ego reaching it
    stop_gap: float = 1.5  # metres between the ego's front and the zone when it stops
    horizon: float = 8.0  # s of other cars' motion considered
    other_accel: float = 3.0  # how fast another car may speed up (its IDM comfort)
    other_top_speed: float = 16.0
    on_path_distance: float = 2.2  # a car this close to the ego's path is on it (a leader)
    cut_in_distance: float = 3.5  # a car ahead this close sideways is cutting in: follow it
    deadlock_s: float = 2.0  # standing this long for a standing car: it waits for us, go


@dataclass
class _Conflict:
    ego_in: float  # arc length on the ego route where the zone starts
    ego_out: float
    t_in: float  # earliest time the other car's front can reach the zone
    t_out: float  # latest time its rear leaves it (inf: it may stay)
    o_lead: float  # metres the other car's front still has to drive to the zone


class TrafficExpert:
    """``act(env)`` -> float32 ``[steering, accel_brake]`` for a :class:`TrafficEnv`."""

    def __init__(self, config: TrafficExpertConfig | None = None) -> None:
        self.config = config or TrafficExpertConfig()
        self._network: Any = None
        self._lanes: dict[tuple[str, str, int], np.ndarray] = {}
        self._still = 0  # decisions the ego has been standing still

    def reset(self) -> None:
        self._network = None
        self._lanes = {}
        self._still = 0

    def act(self, env: TrafficEnv) -> np.ndarray:
        network = env.world.road.network
        if network is not self._network:  # a new episode builds a new road network
            self._network, self._lanes = network, {}
        ego, route, s = env.ego, env.route, env.route_s
        self._still = self._still + 1 if ego.speed < STILL_SPEED else 0
        steering = self._steer(ego, route, s)
        accel = self._accel(env, ego, route, s)
        return np.array([steering, float(np.clip(accel / ACCEL_RANGE, -1.0, 1.0))], np.float32)

    # ------------------------------------------------------------------ steering

    def _steer(self, ego: Any, route: Path, s: float) -> float:
        cfg = self.config
        look = float(np.clip(cfg.lookahead_min + cfg.lookahead_per_speed * ego.speed,
                             cfg.lookahead_min, cfg.lookahead_max))
        target = route.point_at(s + look)
        alpha = bearing(ego.position, ego.heading, target)
        dist = max(float(np.linalg.norm(target - ego.position)), 1e-3)
        curvature = 2.0 * math.sin(alpha) / dist
        beta = math.asin(float(np.clip(curvature * ego.LENGTH / 2.0, -0.99, 0.99)))
        wheel = math.atan(2.0 * math.tan(beta))
        return float(np.clip(wheel / STEER_RANGE, -1.0, 1.0))

    # ------------------------------------------------------------------ speed

    def _accel(self, env: TrafficEnv, ego: Any, route: Path, s: float) -> float:
        cfg = self.config
        v = float(ego.speed)
        v0 = self._target_speed(route, s, v, env.goal_s)
        accel = cfg.accel * (1.0 - (v / max(v0, 0.1)) ** 4)
        for gap, v_other in self._obstacles(env, ego, route, s, v, v0):
            accel = min(accel, self._idm(v, v0, gap, v_other))
        return accel

    def _idm(self, v: float, v0: float, gap: float, v_other: float) -> float:
        cfg = self.config
        s_star = cfg.jam_distance + v * cfg.time_headway + v * (v - v_other) / (
            2.0 * math.sqrt(cfg.accel * cfg.decel))
        free = 1.0 - (v / max(v0, 0.1)) ** 4
        return cfg.accel * (free - (max(s_star, cfg.jam_distance) / max(gap, 0.1)) ** 2)

    def _target_speed(self, route: Path, s: float, v: float, goal_s: float) -> float:
        """Cruise speed, lowered for the bends ahead that need braking now."""
        cfg = self.config
        ahead = np.arange(s, min(s + 10.0 + v * v / (2 * cfg.decel), route.length), 2.0)
        if len(ahead) == 0:
            return cfg.cruise_speed
        k = route.curvature_at(ahead)
        v_curve = np.sqrt(cfg.lateral_accel / np.maximum(k, 1e-4))
        reach = np.sqrt(v_curve**2 + 2.0 * cfg.decel * (ahead - s))
        return float(min(cfg.cruise_speed, reach.min()))

    def _obstacles(self, env: TrafficEnv, ego: Any, route: Path, s: float, v: float,
                   v0: float) -> list[tuple[float, float]]:
        """(bumper gap in m, speed) of what the ego must stay behind: cars on its path and
        stop points before conflict zones it must not enter yet."""
        cfg = self.config
        horizon_m = max(30.0, v * 4.0 + 20.0)
        pts, arc = route.window(s - 30.0, s + horizon_m)  # behind too: followers are no conflict
        out: list[tuple[float, float]] = []
        for other in env.world.road.vehicles:
            if other is ego or np.linalg.norm(other.position - ego.position) > horizon_m + 60:
                continue
            d = np.linalg.norm(pts - other.position, axis=1)
            i = int(np.argmin(d))
            heading_gap = abs(_wrap(other.heading - route.heading_at(arc[i])))
            if d[i] < cfg.on_path_distance and heading_gap < math.pi / 3:
                # ahead along the route, or physically ahead (a car cutting in from the inside
                # of a bend projects behind the ego): follow it; a car behind follows the ego
                ahead = float(ego.direction @ (other.position - ego.position))
                if arc[i] > s or ahead > 0:
                    out.append((max(arc[i] - s, ahead) - CAR_LENGTH, float(other.speed)))
                continue
            rel = other.position - ego.position
            ahead = float(ego.direction @ rel)
            beside = abs(float(ego.direction[0] * rel[1] - ego.direction[1] * rel[0]))
            same_way = abs(_wrap(other.heading - ego.heading)) < math.pi / 3
            if 0 < ahead < 2 * CAR_LENGTH and beside < cfg.cut_in_distance and same_way:
                # a car just ahead and closer than a lane's width, merging towards the ego's
                # path (from the inner ring lane to the same exit): it goes first
                out.append((ahead - CAR_LENGTH, float(other.speed)))
                continue
            if (other.speed < STILL_SPEED and self._still >= cfg.deadlock_s * env.fps
                    and self._waits_for(env, other, ego)):
                continue  # both wait for each other: its IDM follows the ego, so go first
            conflict = self._conflict(other, pts, arc)
            if conflict is not None and not self._gives_way(ego, other, conflict):
                stop = self._yield_point(conflict, s, v, v0, _behind_on_route(ego, other))
                if stop is not None:
                    out.append((stop - s - CAR_LENGTH / 2, 0.0))
        return out

    @staticmethod
    def _waits_for(env: TrafficEnv, other: Any, ego: Any) -> bool:
        """True when ``other``'s IDM takes the ego for the car in front of it."""
        lane = getattr(other, "target_lane_index", None) or other.lane_index
        return env.world.road.neighbour_vehicles(other, lane)[0] is ego

    def _gives_way(self, ego: Any, other: Any, conflict: _Conflict) -> bool:
        """True when ``other`` is a regulated car that yields already, or is on a lower-priority
        lane than the ego's, and can still stop before the conflict zone: the regulator makes
        it give way (the
        roundabout's ring has priority).
        Without this the ego in the ring would wait for every entering car, and they for it."""
        if not hasattr(other, "target_speed"):
            return False
        if other.lane.priority >= ego.lane.priority and not getattr(other, "is_yielding", False):
            return False
        v = float(other.speed)
        return bool(conflict.o_lead > v * v / (2 * self.config.decel) + CAR_LENGTH)

    def _yield_point(self, c: _Conflict, s: float, v: float, v0: float,
                     follower: bool = False) -> float | None:
        """Where to stop before a conflict zone (route arc of the stop), or None to go on.

        A ``follower`` (a car behind the ego on a road the ego has driven, e.g. the outer ring
        lane that the ego crosses to its exit) need not be let past: the ego goes when it
        reaches the zone ``after_margin`` before that car can, and the car follows it.
        Stopping for it braked the ego hard in front of whoever drove behind it (seed 10085:
        rear-ended)."""
        cfg = self.config
        front = s + CAR_LENGTH / 2
        if front > c.ego_in:  # already in the zone: clear it
            return None
        stop = c.ego_in - cfg.stop_gap
        if stop - front < v * v / (2 * cfg.max_brake):  # cannot stop before it any more
            return None
        t_in = _time_to_cover(c.ego_in - front, v, max(v0, 3.0), cfg.accel)
        if follower and t_in + cfg.after_margin < c.t_in:
            return None
        t_out = _time_to_cover(c.ego_out + CAR_LENGTH - front, v, max(v0, 3.0), cfg.accel)
        if t_out + cfg.pass_margin < c.t_in or t_in > c.t_out + cfg.after_margin:
            return None
        return stop

    def _conflict(self, other: Any, pts: np.ndarray, arc: np.ndarray) -> _Conflict | None:
        """The first zone where ``other``'s planned path comes near the ego's, with when it
        can be there."""
        cfg = self.config
        v = float(other.speed)
        # IDM drives towards its target speed, capped by the lane's limit
        top = max(v, min(float(getattr(other, "target_speed", v) or v),
                         float(other.lane.speed_limit or cfg.other_top_speed)))
        reach = max(v, top) * cfg.horizon
        path_pts, path_arc = self._path_of(other, reach)
        if len(path_pts) == 0:
            return None
        gap = np.linalg.norm(path_pts[:, None, :] - pts[None, :, :], axis=2)
        close = gap < cfg.conflict_distance
        if not close.any():
            return None
        rows = np.nonzero(close.any(axis=1))[0]
        o_in = float(path_arc[rows[0]])
        o_out = min(float(path_arc[rows[-1]]), o_in + cfg.zone_length)
        cols = np.nonzero(close[rows[0]: rows[0] + int(cfg.zone_length) + 1].any(axis=0))[0]
        e_in = float(arc[cols[0]])
        e_out = min(float(arc[cols[-1]]), e_in + cfg.zone_length)
        lead = max(o_in - CAR_LENGTH / 2, 0.0)  # its front reaches the zone
        t_in = _time_to_cover(lead, v, max(top, 1.0), cfg.other_accel)
        t_out = (o_out + CAR_LENGTH) / v if v > 0.3 else math.inf
        if t_in > cfg.horizon:
            return None
        return _Conflict(e_in, e_out, t_in, t_out, lead)

    def _path_of(self, other: Any, reach: float) -> tuple[np.ndarray, np.ndarray]:
        """Points ahead of ``other`` along its planned lanes, and their distances from it."""
        network = self._network
        index = getattr(other, "target_lane_index", None) or other.lane_index
        lane = network.get_lane(index)
        s0 = lane.local_coordinates(other.position)[0]
        chunks = [self._points(index)[int(max(s0, 0.0)):]]
        total = lane.length - s0
        last = index
        for step in list(getattr(other, "route", None) or []):
            if total > reach:
                break
            if step[0] != last[1]:
                continue
            lanes = network.graph[step[0]][step[1]]
            end = network.get_lane(last).position(network.get_lane(last).length, 0.0)
            k = step[2] if step[2] is not None else int(np.argmin(
                [np.linalg.norm(ln.position(0.0, 0.0) - end) for ln in lanes]))
            last = (step[0], step[1], k)
            chunks.append(self._points(last))
            total += network.get_lane(last).length
        pts = np.concatenate([other.position[None, :], *chunks])
        dist = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(pts, axis=0), axis=1))])
        keep = dist <= reach
        return pts[keep], dist[keep]

    def _points(self, index: tuple[str, str, int]) -> np.ndarray:
        if index not in self._lanes:
            self._lanes[index] = lane_points(self._network.get_lane(index))
        return self._lanes[index]


def _behind_on_route(ego: Any, other: Any) -> bool:
    """True when ``other`` is on a road segment of the ego's route that the ego already drove
    (any lane of it), or on the ego's own segment behind it."""
    segments = [lane[:2] for lane in getattr(ego, "route", ())]
    mine, theirs = tuple(ego.lane_index[:2]), tuple(other.lane_index[:2])
    if mine not in segments or theirs not in segments:
        return False
    if theirs != mine:
        return segments.index(theirs) < segments.index(mine)
    lane = ego.lane
    return bool(lane.local_coordinates(other.position)[0]
                < lane.local_coordinates(ego.position)[0] - CAR_LENGTH)


def _time_to_cover(distance: float, v: float, v_max: float, accel: float) -> float:
    """Seconds to drive ``distance`` from speed ``v``, accelerating at ``accel`` up to ``v_max``."""
    if distance <= 0:
        return 0.0
    v = max(v, 0.0)
    if v >= v_max:
        return distance / max(v, 1e-3)
    d_acc = (v_max**2 - v**2) / (2 * accel)
    if distance <= d_acc:
        return (-v + math.sqrt(v * v + 2 * accel * distance)) / accel
    return (v_max - v) / accel + (distance - d_acc) / v_max


def _wrap(angle: float) -> float:
    return (angle + math.pi) % (2 * math.pi) - math.pi
