"""Any gymnasium env with image observations, seen through the drivelab contract.

This is the escape hatch for simulators without a dedicated adapter: the frames are the env's
observations, actions are named after the action space, and telemetry is whatever non-image
vectors the env itself provides (the other entries of a Dict observation). Everything that
cannot be mapped is refused at construction with one sentence saying what is needed, so a bad
env id fails before a recorder or an evaluator starts.
"""

from __future__ import annotations

import difflib
import os
from typing import Any

import numpy as np

from drivelab.sim.base import Observation, SignalSpec, SimError, StepResult

# Box2D / classic-control envs import pygame; never let it look for a display.
os.environ.setdefault("SDL_VIDEODRIVER", "dummy")

import gymnasium as gym
from gymnasium import spaces

#: Used when an env does not declare ``metadata["render_fps"]``: Charles' capture rate.
DEFAULT_FPS = 30.0


def is_image_space(space: gym.Space) -> bool:
    """True for a uint8 Box of shape (H, W, 3): what drivelab stores as a frame."""
    return (
        isinstance(space, spaces.Box)
        and space.dtype == np.uint8
        and len(space.shape) == 3
        and space.shape[2] == 3
    )


def describe_space(space: gym.Space) -> str:
    """A one-line description (gymnasium's repr of a Box lists every bound)."""
    if isinstance(space, spaces.Box):
        return f"Box(shape={space.shape}, dtype={space.dtype})"
    if isinstance(space, spaces.Dict):
        inner = ", ".join(f"{k}: {describe_space(s)}" for k, s in space.spaces.items())
        return f"Dict({inner})"
    return str(space)


def _bound(values: np.ndarray, reduce: Any) -> float | None:
    """One scalar bound for a whole signal (SignalSpec keeps one), None where unbounded."""
    v = float(reduce(values))
    return v if np.isfinite(v) else None


def _make(env_id: str, max_steps: int | None, make_kwargs: dict[str, Any]) -> gym.Env:
    if max_steps is not None:
        make_kwargs = {**make_kwargs, "max_episode_steps": int(max_steps)}
    try:
        return gym.make(env_id, disable_env_checker=True, **make_kwargs)
    except gym.error.UnregisteredEnv:
        by_lower = {k.lower(): k for k in gym.registry}
        close = difflib.get_close_matches(env_id.lower(), list(by_lower), n=3, cutoff=0.6)
        hint = f" (close matches: {', '.join(by_lower[c] for c in close)})" if close else ""
        raise SimError(
            f"unknown environment {env_id!r}: use 'carracing' or a registered gymnasium id{hint}"
        ) from None
    except gym.error.Error as exc:
        raise SimError(f"cannot create gymnasium env {env_id!r}: {exc}") from exc
    except TypeError as exc:
        raise SimError(f"bad options for gymnasium env {env_id!r}: {exc}") from exc


class GymImageEnv:
    """``DrivingEnv`` over a gymnasium env whose observations are uint8 HxWx3 images.

    Observation spaces accepted: an image ``Box``, or a ``Dict`` holding exactly one image
    ``Box`` plus numeric ``Box`` entries that become telemetry (flattened, float32). Action
    spaces accepted: ``Box`` (``action_0..``, bounds from the space; actions are clipped) and
    ``Discrete`` (one ``action`` signal, rounded to the nearest valid index).
    """

    def __init__(self, env_id: str, max_steps: int | None = None, **make_kwargs: Any) -> None:
        self._gym = _make(env_id, max_steps, make_kwargs)
        self.env_id = env_id
        try:
            self._image_key, self.frame_shape, self.telemetry_specs = self._map_observations(
                self._gym.observation_space
            )
            self.action_specs = self._map_actions(self._gym.action_space)
        except SimError:
            self._gym.close()
            raise
        self.fps = float(self._gym.metadata.get("render_fps") or DEFAULT_FPS)
        self._steps = 0
        self._started = False

    # ------------------------------------------------------------------ contract

    def reset(self, seed: int | None = None) -> Observation:
        obs, _ = self._gym.reset(seed=seed)
        self._steps = 0
        self._started = True
        return self._observation(obs)

    def step(self, action: np.ndarray) -> StepResult:
        if not self._started:
            raise SimError(f"{self.env_id}: step() called before reset()")
        obs, reward, terminated, truncated, info = self._gym.step(self._to_gym_action(action))
        self._steps += 1
        return StepResult(
            observation=self._observation(obs),
            reward=float(reward),
            terminated=bool(terminated),
            truncated=bool(truncated),
            info={**dict(info), "steps": self._steps},
        )

    def close(self) -> None:
        self._gym.close()

    @property
    def unwrapped(self) -> gym.Env:
        """The wrapped gymnasium env, for callers that need simulator specifics."""
        return self._gym.unwrapped

    # ------------------------------------------------------------------ mapping

    def _map_observations(
        self, space: gym.Space
    ) -> tuple[str | None, tuple[int, int, int], tuple[SignalSpec, ...]]:
        if is_image_space(space):
            return None, tuple(space.shape), ()  # type: ignore[return-value]
        if isinstance(space, spaces.Dict):
            images = [k for k, s in space.spaces.items() if is_image_space(s)]
            others = {k: s for k, s in space.spaces.items() if k not in images}
            numeric = all(
                isinstance(s, spaces.Box) and np.issubdtype(s.dtype, np.number)
                for s in others.values()
            )
            if len(images) == 1 and numeric:
                specs = tuple(
                    SignalSpec(
                        name=k,
                        size=int(np.prod(s.shape)) if s.shape else 1,
                        low=_bound(s.low, np.min),
                        high=_bound(s.high, np.max),
                        description=f"{self.env_id} observation entry {k!r}",
                    )
                    for k, s in others.items()
                )
                return images[0], tuple(space.spaces[images[0]].shape), specs  # type: ignore[return-value]
        raise SimError(
            f"{self.env_id} has observation space {describe_space(space)}, but drivelab needs uint8 image "
            f"observations of shape (H, W, 3): a Box, or a Dict with one such Box and numeric "
            f"Box entries"
        )

    def _map_actions(self, space: gym.Space) -> tuple[SignalSpec, ...]:
        if isinstance(space, spaces.Box):
            low, high = space.low.reshape(-1), space.high.reshape(-1)
            return tuple(
                SignalSpec(
                    name=f"action_{i}",
                    low=_bound(low[i : i + 1], np.min),
                    high=_bound(high[i : i + 1], np.max),
                    description=f"{self.env_id} action component {i}",
                )
                for i in range(low.size)
            )
        if isinstance(space, spaces.Discrete):
            start = int(space.start)
            return (
                SignalSpec(
                    name="action",
                    low=float(start),
                    high=float(start + space.n - 1),
                    description=f"{self.env_id} discrete action index (rounded)",
                ),
            )
        raise SimError(
            f"{self.env_id} has action space {describe_space(space)}, but drivelab supports Box and Discrete "
            f"action spaces only"
        )

    def _to_gym_action(self, action: np.ndarray) -> Any:
        act = np.asarray(action, dtype=np.float64).reshape(-1)
        if act.shape != (len(self.action_specs),):
            names = [s.name for s in self.action_specs]
            raise SimError(
                f"{self.env_id} expects {len(names)} actions {names}, got shape {np.shape(action)}"
            )
        if not np.all(np.isfinite(act)):
            raise SimError(f"{self.env_id} got a non-finite action {act.tolist()}")
        space = self._gym.action_space
        if isinstance(space, spaces.Discrete):
            lo, hi = int(space.start), int(space.start + space.n - 1)
            return int(np.clip(round(float(act[0])), lo, hi))
        box = np.clip(act.reshape(space.shape), space.low, space.high)
        return box.astype(space.dtype)

    def _observation(self, obs: Any) -> Observation:
        if self._image_key is None:
            return Observation(frame=np.ascontiguousarray(obs, dtype=np.uint8), telemetry={})
        telemetry = {
            spec.name: np.asarray(obs[spec.name], dtype=np.float32).reshape(spec.size)
            for spec in self.telemetry_specs
        }
        frame = np.ascontiguousarray(obs[self._image_key], dtype=np.uint8)
        return Observation(frame=frame, telemetry=telemetry)
