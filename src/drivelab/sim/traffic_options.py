"""Traffic scenarios by name and their options, checked before any simulator starts.

Every verb builds its env from one string (``--env``, a config's ``env``), so a scenario's
options travel inside it: ``intersection`` or ``intersection:density=2,duration=40``. Keyword
options given to ``make_env`` (``max_steps`` from the verbs) are merged in. A wrong name or
option is one ``SimError`` line that lists the valid ones.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from typing import Any

from drivelab.errors import clip
from drivelab.sim.base import SimError


@dataclass(frozen=True)
class Scenario:
    """What differs between the junction worlds (defaults measured with the expert)."""

    name: str
    env_id: str
    commands: tuple[str, ...]  # one label per exit, in one-hot order
    duration: float  # least seconds before a timeout (more on long routes: `route_duration`)
    spawn_per_s: float  # new cars per second at density 1
    initial_cars: int  # cars on the map at reset at density 1
    arrival_distance: float  # metres down the exit road that count as arrived
    stock_spawn_per_step: float  # highway-env's own spawn probability per env step
    stock_cars: int  # highway-env's own cars at reset


SCENARIOS: dict[str, Scenario] = {
    "intersection": Scenario("intersection", "TrafficIntersection-v0",
                             ("left", "straight", "right"), 30.0, 0.6, 10, 25.0, 0.6, 10),
    "roundabout": Scenario("roundabout", "TrafficRoundabout-v0",
                           ("exit1", "exit2", "exit3", "exit4"), 30.0, 0.25, 6, 10.0, 0.0, 4),
}


@dataclass(frozen=True)
class TrafficOptions:
    """Options of a traffic scenario (all optional).

    density: traffic relative to highway-env's default (spawn rate and cars at reset).
    duration: seconds before the episode times out; default per route (`traffic.route_duration`).
    decision_hz: decisions (env steps) per second; spawns are scaled by 1/rate per step.
    frame_size: side of the square RGB frame in pixels.
    view: metres of road the frame spans (ego-centred).
    exit: fix the destination (a command label or index); default: drawn from the seed.
    purpose_distance: metres along the route to the ``purpose`` target point.
    max_steps: hard cap on env steps (the verbs' --max-steps), on top of ``duration``.
    traffic: ``drivelab`` (spawns per second, cars from every side) or ``highway-env`` (its own
        spawn model, for reference figures: a probability per env step whatever the decision
        rate, and at the roundabout its four cars at reset and none later); x density.
    """

    density: float = 1.0
    duration: float | None = None
    decision_hz: int = 5
    frame_size: int = 96
    view: float = 50.0
    exit: str | None = None
    purpose_distance: float = 20.0
    max_steps: int = 1000
    traffic: str = "drivelab"


TRAFFIC_MODELS = ("drivelab", "highway-env")
OPTION_NAMES = tuple(f.name for f in fields(TrafficOptions))


def split_name(name: str) -> tuple[str, dict[str, str]]:
    """``"roundabout:density=2, duration=40"`` -> ``("roundabout", {...})`` (raw strings)."""
    head, _, tail = name.strip().partition(":")
    opts: dict[str, str] = {}
    for item in filter(None, (p.strip() for p in tail.split(","))):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise SimError(f"bad scenario option {_short(item)!r} in --env: write "
                           f"{head.strip().lower()}:name=value,... with names {', '.join(OPTION_NAMES)}")
        opts[key.strip()] = value.strip()
    return head.strip().lower(), opts


def split_name_head(name: str) -> str:
    """The scenario part of an env name, lower-cased (no option parsing, never raises)."""
    return name.strip().partition(":")[0].strip().lower()


def resolve(name: str, **given: Any) -> tuple[Scenario, TrafficOptions]:
    """Scenario and checked options for ``name`` plus keyword ``given`` options."""
    head, raw = split_name(name)
    if head not in SCENARIOS:
        raise SimError(f"unknown traffic scenario {_short(head)!r}: use one of "
                       f"{', '.join(SCENARIOS)}")
    scenario = SCENARIOS[head]
    merged: dict[str, Any] = {**raw, **given}
    unknown = sorted(set(merged) - set(OPTION_NAMES))
    if unknown:
        raise SimError(f"unknown option(s) {', '.join(_short(u) for u in unknown)} for "
                       f"{head}; valid: {', '.join(OPTION_NAMES)}")
    opts = TrafficOptions()
    for key, value in merged.items():
        opts = replace(opts, **{key: _convert(head, key, value)})
    _check(scenario, opts)
    return scenario, opts


def _convert(head: str, key: str, value: Any) -> Any:
    kind = {f.name: f.type for f in fields(TrafficOptions)}[key]
    if value is None or (isinstance(value, str) and value.lower() in ("", "none")):
        if "None" in str(kind):
            return None
        raise SimError(f"{head} option {key} needs a value")
    try:
        if "int" in str(kind):
            number = float(value)
            if not number.is_integer():
                raise ValueError
            return int(number)
        if "float" in str(kind):
            return float(value)
    except (TypeError, ValueError):
        what = "a whole number" if "int" in str(kind) else "a number"
        raise SimError(f"{head} option {key} must be {what}, got {_short(str(value))!r}") from None
    return str(value)


def _check(scenario: Scenario, o: TrafficOptions) -> None:
    problems = []
    if not (math.isfinite(o.density) and 0.0 <= o.density <= 5.0):
        problems.append(f"density must be in [0, 5], got {o.density}")
    if o.duration is not None and not (math.isfinite(o.duration) and 1.0 <= o.duration <= 3600):
        problems.append(f"duration must be in [1, 3600] s, got {o.duration}")
    if not 1 <= o.decision_hz <= 30:
        problems.append(f"decision_hz must be in [1, 30], got {o.decision_hz}")
    if not 16 <= o.frame_size <= 512:
        problems.append(f"frame_size must be in [16, 512] px, got {o.frame_size}")
    if not (math.isfinite(o.view) and 10.0 <= o.view <= 400.0):
        problems.append(f"view must be in [10, 400] m, got {o.view}")
    if not (math.isfinite(o.purpose_distance) and 1.0 <= o.purpose_distance <= 100.0):
        problems.append(f"purpose_distance must be in [1, 100] m, got {o.purpose_distance}")
    if o.max_steps < 1:
        problems.append(f"max_steps must be >= 1, got {o.max_steps}")
    if o.traffic not in TRAFFIC_MODELS:
        problems.append(f"traffic must be one of {', '.join(TRAFFIC_MODELS)}, got "
                        f"{_short(o.traffic)!r}")
    if o.exit is not None:
        try:
            exit_index(scenario, o.exit)
        except SimError as exc:
            problems.append(str(exc))
    if problems:
        raise SimError(f"{scenario.name}: " + "; ".join(problems))


def exit_index(scenario: Scenario, value: str | None) -> int | None:
    """Index of an exit given by label (``left``, ``exit2``) or number (0-based)."""
    if value is None:
        return None
    text = str(value).strip().lower()
    if text in scenario.commands:
        return scenario.commands.index(text)
    if text.isdigit() and int(text) < len(scenario.commands):
        return int(text)
    raise SimError(f"exit must be one of {', '.join(scenario.commands)} "
                   f"(or 0..{len(scenario.commands) - 1}), got {_short(text)!r}")


def _short(text: str, limit: int = 40) -> str:
    return clip(text, limit)
