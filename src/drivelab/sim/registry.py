"""Name -> environment and environment -> expert: the one place that knows which exist.

Configs and the CLI name a simulator with a string; everything downstream only sees the
``DrivingEnv`` contract. CarRacing gets its dedicated adapter (telemetry, unstuck, expert);
the traffic scenarios (``intersection``, ``roundabout``, with options after a colon) get the
highway-env adapter and its planner; any other gymnasium id goes through the generic image
adapter.
"""

from __future__ import annotations

import difflib
import inspect
from typing import Any

from drivelab.sim.base import DrivingEnv, SimError
from drivelab.sim.carracing import CarRacingEnv
from drivelab.sim.expert import CarRacingExpert
from drivelab.sim.gym_adapter import GymImageEnv
from drivelab.sim.traffic_options import SCENARIOS, split_name_head

#: Names (lower-cased) that select the dedicated CarRacing adapter.
CARRACING_NAMES = frozenset({"carracing", CarRacingEnv.env_id.lower()})


def make_env(name: str, *, generic: bool = False, **options: Any) -> DrivingEnv:
    """Build the environment called ``name`` with constructor ``options``.

    ``"carracing"`` (any case) and ``"CarRacing-v3"`` give :class:`CarRacingEnv`; any other
    gymnasium id gives :class:`GymImageEnv`. ``generic=True`` forces the generic adapter even
    for CarRacing (raw gymnasium actions and frames, no telemetry).
    """
    head = split_name_head(name)
    if not generic and head in SCENARIOS:
        from drivelab.sim.traffic import TrafficEnv  # highway-env is imported only when used

        return TrafficEnv(name, **options)
    if not generic and ((":" in name and difflib.get_close_matches(head, SCENARIOS, cutoff=0.6))
                        or difflib.get_close_matches(head, SCENARIOS, cutoff=0.8)):
        raise SimError(f"unknown traffic scenario {head[:40]!r}: use one of {', '.join(SCENARIOS)}"
                       " (options after a colon, e.g. intersection:density=2)")
    if not generic and name.strip().lower() in CARRACING_NAMES:
        accepted = list(inspect.signature(CarRacingEnv).parameters)
        unknown = sorted(set(options) - set(accepted))
        if unknown:
            raise SimError(f"unknown option(s) {unknown} for carracing; accepted: {accepted}")
        return CarRacingEnv(**options)
    gym_id = CarRacingEnv.env_id if name.strip().lower() in CARRACING_NAMES else name
    return GymImageEnv(gym_id, **options)


def make_expert(env: DrivingEnv) -> Any:
    """The privileged expert driver for ``env``; ``SimError`` when none exists for it."""
    if isinstance(env, CarRacingEnv):
        return CarRacingExpert()
    from drivelab.sim.traffic import TrafficEnv  # no highway-env import until an env is built

    if isinstance(env, TrafficEnv):
        from drivelab.sim.traffic_expert import TrafficExpert

        return TrafficExpert()
    raise SimError(f"no expert driver for env {env.env_id}")
