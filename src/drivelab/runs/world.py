"""Which world a run was trained in, and the one rule for driving it elsewhere.

A run records the env name of its dataset (``provenance.env`` in ``run.json``, options
included: ``intersection:density=0.5``) when it starts, so every verb that drives it (``eval``,
``diagnose``, an exported file's ``eval``) defaults to that world instead of CarRacing. The
rule for an env named on top: the same *world* (the env id it builds) with other options is
allowed (a density or timeout study), another world is refused naming both ids, because the
roads, the route command and usually the signals differ; a policy would drive blind or fail
on a signal size much later. Runs whose data has no world (imports) keep the verbs' default.
"""

from __future__ import annotations

from drivelab.config import ExperimentConfig
from drivelab.data.store import DatasetStore
from drivelab.errors import DrivelabError
from drivelab.runs.folder import RunFolder
from drivelab.seeds import DEFAULT_ENV
from drivelab.sim.registry import env_world


class WorldMismatch(DrivelabError):
    """Data or an env of one world given to a run or config of another."""


def recorded_env(run: RunFolder) -> str | None:
    """The env name ``run`` was trained in (``None``: not recorded, or its data has no world)."""
    provenance = run.read_status().get("provenance") or {}
    env = provenance.get("env")
    return env if isinstance(env, str) and env else None


def check_same_world(trained: str | None, given: str, who: str, what: str) -> None:
    """Refuse ``given`` (an env name) when ``trained`` names another world; both ids named."""
    if trained is None or env_world(trained) == env_world(given):
        return
    raise WorldMismatch(
        f"{who} was trained in {env_world(trained)} ({trained}), {what} is {env_world(given)} "
        f"({given}): use data or an env of the same world (options may differ, e.g. "
        f"{trained.partition(':')[0]}:density=2)"
    )


def env_for(trained: str | None, given: str | None, who: str, flag: str = "--env") -> str:
    """The env to drive a run in: ``given`` if it is the run's world, else the run's own."""
    if given is None:
        return trained or DEFAULT_ENV
    check_same_world(trained, given, who, f"{flag} {given}")
    return given


def run_env(run: RunFolder, given: str | None, flag: str = "--env") -> str:
    """`env_for` a run folder: its recorded world, or ``given`` checked against it."""
    return env_for(recorded_env(run), given, run.name, flag)


def check_data_world(config: ExperimentConfig, store: DatasetStore, resumed: RunFolder | None = None) -> None:
    """Refuse training on data of another world than the config names (``live.env``, when the
    config sets it) or than a resumed run was trained in; both env ids named, before any file."""
    data_env = store.meta.world_name()
    if data_env is None:
        return
    live = config.live
    if live is not None and "env" in live.model_fields_set and env_world(live.env) != env_world(data_env):
        raise WorldMismatch(
            f"{store.path} was recorded in {env_world(data_env)} ({data_env}), the config's live.env "
            f"is {env_world(live.env)} ({live.env}): give data.path a dataset of the config's world, "
            f"or a config for {data_env.partition(':')[0]}"
        )
    if resumed is not None:
        check_same_world(recorded_env(resumed), data_env, resumed.name, f"the dataset {store.path}")
