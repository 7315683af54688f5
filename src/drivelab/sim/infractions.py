"""Typed infractions and episode outcomes: what went wrong on a step, how an episode ended.

An env reports them on its ``StepResult`` (``infractions`` on the step they happened,
``outcome`` on the last step) instead of ad-hoc ``info`` keys, so the driving score cannot
silently miss a penalty because a new env spells a key differently or lacks it. The penalty
each one costs is the evaluator's business (``drivelab.evaluate.metrics``), not the env's.
"""

from __future__ import annotations

from enum import StrEnum


class Infraction(StrEnum):
    """One penalised event, reported on the step it happened."""

    COLLISION = "collision"  # the ego touched another vehicle (the episode ends)
    OFF_ROAD = "off_road"  # the ego's centre left every lane (one event per excursion)
    WRONG_EXIT = "wrong_exit"  # the ego drove down an exit that is not its destination
    ROUTE_DEVIATION = "route_deviation"  # the ego strayed too far from its route
    TIMEOUT = "timeout"  # the scenario's time ran out before the destination


class Outcome(StrEnum):
    """How an episode ended, reported on its last step (``None`` while it runs)."""

    SUCCESS = "success"  # destination reached without a collision
    COLLISION = "collision"
    ROUTE_FAILURE = "route_failure"  # wrong exit or route deviation: the route is failed
    TIMEOUT = "timeout"
