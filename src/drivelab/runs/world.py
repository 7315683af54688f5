"""Which world a run was trained in, and the one rule for driving it elsewhere.

A run records the env name of its dataset (``provenance.env`` in ``run.json``, options
included: ``intersection:density=0.5``) when it starts, so every verb that drives it (``eval``,
``diagnose``, an exported file's ``eval``) defaults to that world instead of CarRacing. The
rule for an env named on top: the same *world* (the env id it builds) with other options is
allowed (a density or timeout study), another world is refused naming both ids, because the
roads, the route command and usually the signals differ; a policy would drive blind or fail
on a signal size much later. Runs whose data has no world (imports) keep the verbs' default.
The rule itself (`check_same_world`) is `drivelab.sim.registry`'s, beside the config-vs-data
check, so the data reader applies both in one place.
"""

from __future__ import annotations

from drivelab.runs.folder import RunFolder
from drivelab.seeds import DEFAULT_ENV
from drivelab.sim.registry import WorldMismatch, check_same_world


def recorded_env(run: RunFolder) -> str | None:
    """The env name ``run`` was trained in (``None``: not recorded, or its data has no world)."""
    provenance = run.read_status().get("provenance") or {}
    env = provenance.get("env")
    return env if isinstance(env, str) and env else None


def env_for(trained: str | None, given: str | None, who: str, flag: str = "--env") -> str:
    """The env to drive a run in: ``given`` if it is the run's world, else the run's own."""
    if given is None:
        return trained or DEFAULT_ENV
    check_same_world(trained, given, who, f"{flag} {given}")
    return given


def run_env(run: RunFolder, given: str | None, flag: str = "--env") -> str:
    """`env_for` a run folder: its recorded world, or ``given`` checked against it."""
    return env_for(recorded_env(run), given, run.name, flag)


__all__ = ["WorldMismatch", "check_same_world", "env_for", "recorded_env", "run_env"]
