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
from dataclasses import fields
from typing import Any

from drivelab.errors import DrivelabError
from drivelab.sim.base import DrivingEnv, SimError
from drivelab.sim.carracing import CarRacingEnv
from drivelab.sim.expert import CarRacingExpert
from drivelab.sim.gym_adapter import GymImageEnv
from drivelab.sim.traffic_options import SCENARIOS, TrafficOptions, resolve, split_name_head

#: Names (lower-cased) that select the dedicated CarRacing adapter.
CARRACING = "carracing"
CARRACING_NAMES = frozenset({CARRACING, CarRacingEnv.env_id.lower()})


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


def env_world(name: str) -> str:
    """The env id ``name`` builds, without building it: what two names must share to be one world.

    Options (traffic density, a timeout) leave the world the same: a policy trained at one
    density may be driven at another. A different world (CarRacing vs a junction, or the
    intersection vs the roundabout) has other roads, commands and signals.
    """
    head = split_name_head(name)
    if head in SCENARIOS:
        return SCENARIOS[head].env_id
    if name.strip().lower() in CARRACING_NAMES:
        return CarRacingEnv.env_id
    return name.strip()


class WorldMismatch(DrivelabError):
    """Data or an env of one world given to a run or config of another."""


def check_config_world(config_env: str | None, data_env: str | None, source: str) -> None:
    """Refuse data recorded in another world than the config names (``live.env``, when the
    config sets it), both env ids named; options may differ (a density study)."""
    if config_env is None or data_env is None or env_world(config_env) == env_world(data_env):
        return
    raise WorldMismatch(
        f"{source} was recorded in {env_world(data_env)} ({data_env}), the config's live.env "
        f"is {env_world(config_env)} ({config_env}): give data.path a dataset of the config's world, "
        f"or a config for {data_env.partition(':')[0]}"
    )


def check_same_world(trained: str | None, given: str, who: str, what: str) -> None:
    """Refuse ``given`` (an env name) when ``trained`` names another world; both ids named."""
    if trained is None or env_world(trained) == env_world(given):
        return
    raise WorldMismatch(
        f"{who} was trained in {env_world(trained)} ({trained}), {what} is {env_world(given)} "
        f"({given}): use data or an env of the same world (options may differ, e.g. "
        f"{trained.partition(':')[0]}:density=2)"
    )


def check_data_world(
    data_env: str | None, config_env: str | None, trained: tuple[str | None, str] | None, source: str
) -> None:
    """Refuse a dataset recorded in ``data_env`` for another world than the config's ``live.env``
    (``config_env``, when the config sets it) or a resumed run's (``trained``: its recorded env
    and its name); both env ids named. Data without a world (imports) passes."""
    if data_env is None:
        return
    check_config_world(config_env, data_env, source)
    if trained is not None:
        check_same_world(trained[0], data_env, trained[1], f"the dataset {source}")


def canonical_env(name: str) -> str:
    """``name`` as a dataset or run records it: ``make_env`` rebuilds the same world from it.

    Traffic options are checked and written out when they differ from the defaults (sorted by
    the option table, ``max_steps`` dropped: it is every verb's own flag); CarRacing's aliases
    become ``carracing``; any other (gymnasium) id is kept as given.
    """
    head = split_name_head(name)
    if head in SCENARIOS:
        _, options = resolve(name)
        default = TrafficOptions()
        changed = [f"{f.name}={getattr(options, f.name)}" for f in fields(options)
                   if f.name != "max_steps" and getattr(options, f.name) != getattr(default, f.name)]
        return head + (":" + ",".join(changed) if changed else "")
    if name.strip().lower() in CARRACING_NAMES:
        return CARRACING
    return name.strip()


def env_name_of_id(env_id: str, frame_shape: tuple[int, ...]) -> str | None:
    """The env name of a world known by its recorded id (datasets made before names were
    recorded), or ``None`` for an id drivelab cannot rebuild (an import, a generic gym id)."""
    if env_id.strip().lower() in CARRACING_NAMES:
        return CARRACING
    for scenario in SCENARIOS.values():
        if scenario.env_id == env_id:
            size = int(frame_shape[0]) if frame_shape else TrafficOptions.frame_size
            return scenario.name + (f":frame_size={size}" if size != TrafficOptions.frame_size else "")
    return None


def make_expert(env: DrivingEnv) -> Any:
    """The privileged expert driver for ``env``; ``SimError`` when none exists for it."""
    if isinstance(env, CarRacingEnv):
        return CarRacingExpert()
    from drivelab.sim.traffic import TrafficEnv  # no highway-env import until an env is built

    if isinstance(env, TrafficEnv):
        from drivelab.sim.traffic_expert import TrafficExpert

        return TrafficExpert()
    raise SimError(f"no expert driver for env {env.env_id}")
