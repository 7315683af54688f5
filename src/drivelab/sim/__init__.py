"""Simulators behind one contract: frames + telemetry in, named actions out.

``make_env(name)`` builds an environment, ``make_expert(env)`` its privileged demonstrator.
"""

from drivelab.sim.base import DrivingEnv, Observation, SignalSpec, SimError, StepResult
from drivelab.sim.carracing import CarRacingEnv
from drivelab.sim.expert import CarRacingExpert, ExpertConfig
from drivelab.sim.gym_adapter import GymImageEnv
from drivelab.sim.registry import canonical_env, env_name_of_id, env_world, make_env, make_expert

__all__ = [
    "CarRacingEnv",
    "CarRacingExpert",
    "DrivingEnv",
    "ExpertConfig",
    "GymImageEnv",
    "Observation",
    "SignalSpec",
    "SimError",
    "StepResult",
    "canonical_env",
    "env_name_of_id",
    "env_world",
    "make_env",
    "make_expert",
]
