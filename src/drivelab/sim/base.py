"""The simulator contract every downstream stage relies on.

A driving environment yields, at each step, one camera *frame* (uint8, H x W x 3) and named
*telemetry* signals (float32 vectors), and takes named *actions*. Keeping this contract small
is what lets the recorder, the dataset and the closed-loop evaluator work with any simulator:
none of them knows about gymnasium or Box2D.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

from drivelab.errors import DrivelabError
from drivelab.sim.infractions import Infraction, Outcome


class SimError(DrivelabError):
    """A user-facing problem with an environment (unknown id, unsupported observations...)."""


@dataclass(frozen=True)
class SignalSpec:
    """One named float signal: a telemetry channel or an action.

    ``size`` is the number of values per step (``purpose`` has 2); ``low``/``high`` bound it
    where the simulator defines a range (actions always do).
    """

    name: str
    unit: str = ""
    size: int = 1
    low: float | None = None
    high: float | None = None
    description: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "unit": self.unit,
            "size": self.size,
            "low": self.low,
            "high": self.high,
            "description": self.description,
        }


@dataclass
class Observation:
    """What the car sees and knows at one step."""

    frame: np.ndarray  # uint8 [H, W, 3]
    telemetry: dict[str, np.ndarray]  # name -> float32 [size]


@dataclass
class StepResult:
    observation: Observation
    reward: float
    terminated: bool
    truncated: bool
    info: dict[str, Any] = field(default_factory=dict)
    #: Typed penalised events of this step (see `drivelab.sim.infractions`); envs that report
    #: theirs through ``info`` instead (CarRacing's off-track and unstuck) leave it empty.
    infractions: tuple[Infraction, ...] = ()
    #: How the episode ended, on its last step, for envs that know (traffic); else None.
    outcome: Outcome | None = None

    @property
    def done(self) -> bool:
        return self.terminated or self.truncated


@runtime_checkable
class DrivingEnv(Protocol):
    """A simulator seen as frames + telemetry in, named actions out."""

    env_id: str
    fps: float
    frame_shape: tuple[int, int, int]
    telemetry_specs: tuple[SignalSpec, ...]
    action_specs: tuple[SignalSpec, ...]

    def reset(self, seed: int | None = None) -> Observation: ...

    def step(self, action: np.ndarray) -> StepResult:
        """Apply ``action`` (float32 [len(action_specs)], in spec order) for one step."""
        ...

    def close(self) -> None: ...
