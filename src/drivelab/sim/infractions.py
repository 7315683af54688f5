"""Typed infractions and episode outcomes: what went wrong on a step, how an episode ended.

An env reports them on its ``StepResult`` (``infractions`` on the step they happened,
``outcome`` on the last step) instead of ad-hoc ``info`` keys, so the driving score cannot
silently miss a penalty because a new env spells a key differently or lacks it. The penalty
each one costs is the evaluator's business (``drivelab.evaluate.metrics``), not the env's.
"""

from __future__ import annotations

from enum import StrEnum

import numpy as np

#: Below this speed (m/s) the ego counts as stopped: whatever touches it drove into it.
STOPPED_SPEED = 0.5


class Infraction(StrEnum):
    """One penalised event, reported on the step it happened."""

    COLLISION = "collision"  # the ego drove into another vehicle (the episode ends)
    STRUCK = "struck"  # another vehicle drove into the stopped or slower ego (the episode ends)
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


def collision_cause(ego_position: np.ndarray, ego_velocity: np.ndarray,
                    other_position: np.ndarray, other_velocity: np.ndarray) -> Infraction:
    """Who drove into whom, from the two cars' state at the simulation frame of the impact.

    Each car's *closing speed* is its velocity along the line between the two centres, towards
    the other. The ego is ``STRUCK`` when it stood (below ``STOPPED_SPEED``) or the other car
    closed faster than the ego did: a rear-end into a slower ego, a car driving into the ego's
    side. Otherwise (the ego closed at least as fast: it rear-ended a slower car, drove into a
    crossing car's side, swerved into a neighbour) it is the ego's ``COLLISION``. The rule is
    about motion only, not right of way: an ego that entered a junction it should have yielded
    at and was then hit in the side counts as struck. Head-on, the faster car caused it.
    """
    gap = np.asarray(other_position, float) - np.asarray(ego_position, float)
    u = gap / max(float(np.linalg.norm(gap)), 1e-6)
    ego_closing = float(np.asarray(ego_velocity, float) @ u)
    other_closing = float(np.asarray(other_velocity, float) @ -u)
    stopped = float(np.linalg.norm(ego_velocity)) < STOPPED_SPEED
    return Infraction.STRUCK if stopped or other_closing > ego_closing else Infraction.COLLISION
