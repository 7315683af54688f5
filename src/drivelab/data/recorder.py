"""Turning a driven episode into an `EpisodeRecord`.

The recorder is the only place that decides what a sample *is*: the frame and telemetry the car
had before acting, the expert's intended action as the label, and whether a perturbed action was
executed instead (DART-style noise, so the data holds recoveries). It preallocates its buffers
so recording costs a copy per step, not a reallocation.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from drivelab.data.records import EpisodeRecord
from drivelab.sim.base import Observation, SignalSpec


class EpisodeRecorder:
    """Accumulates one episode step by step into growing numpy buffers."""

    def __init__(
        self,
        frame_shape: tuple[int, int, int],
        telemetry: tuple[SignalSpec, ...],
        actions: tuple[SignalSpec, ...],
        capacity: int = 1024,
    ) -> None:
        self._frame_shape = tuple(frame_shape)
        self._telemetry = telemetry
        self._actions = actions
        self._n = 0
        self._alloc(max(1, capacity))

    def _alloc(self, capacity: int) -> None:
        def grow(old: np.ndarray | None, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
            new = np.zeros((capacity, *shape), dtype)
            if old is not None:
                new[: self._n] = old[: self._n]
            return new

        prev = getattr(self, "_frames", None)
        self._frames = grow(prev, self._frame_shape, np.uint8)
        self._tel = {
            s.name: grow(getattr(self, "_tel", {}).get(s.name), (s.size,), np.float32)
            for s in self._telemetry
        }
        self._act = grow(getattr(self, "_act", None), (len(self._actions),), np.float32)
        self._reward = grow(getattr(self, "_reward", None), (), np.float32)
        self._perturbed = grow(getattr(self, "_perturbed", None), (), bool)
        self._capacity = capacity

    def add(self, obs: Observation, label: np.ndarray, perturbed: bool, reward: float) -> None:
        """Record one step: what was seen, what the expert wanted, what happened."""
        if self._n == self._capacity:
            self._alloc(self._capacity * 2)
        i = self._n
        self._frames[i] = obs.frame
        for name, buf in self._tel.items():
            buf[i] = obs.telemetry[name]
        self._act[i] = label
        self._reward[i] = reward
        self._perturbed[i] = perturbed
        self._n += 1

    def __len__(self) -> int:
        return self._n

    def finish(self, info: dict[str, Any]) -> EpisodeRecord:
        n = self._n
        actions: dict[str, np.ndarray] = {}
        col = 0
        for spec in self._actions:
            actions[spec.name] = self._act[:n, col : col + spec.size].copy()
            col += spec.size
        return EpisodeRecord(
            frames=self._frames[:n],
            telemetry={k: v[:n] for k, v in self._tel.items()},
            actions=actions,
            reward=self._reward[:n],
            perturbed=self._perturbed[:n],
            info=info,
        )


class ActionNoise:
    """DART-style perturbations: the executed action deviates, the label stays the expert's.

    Each step not already perturbed starts a perturbation with probability ``p``; it holds a
    Gaussian offset (``sigma`` per action) for ``hold`` steps, long enough at 50 fps to push the
    car off its line so the expert's recovery ends up in the data.
    """

    def __init__(
        self,
        p: float,
        rng: np.random.Generator,
        low: np.ndarray,
        high: np.ndarray,
        sigma: np.ndarray,
        hold: int = 10,
    ) -> None:
        self.p = p
        self._rng = rng
        self._low, self._high, self._sigma = low, high, sigma
        self._hold = hold
        self._left = 0
        self._offset = np.zeros_like(low)

    def apply(self, intended: np.ndarray) -> tuple[np.ndarray, bool]:
        if self.p <= 0.0:
            return intended, False
        if self._left == 0 and self._rng.random() < self.p:
            self._left = self._hold
            self._offset = self._rng.normal(0.0, 1.0, size=intended.shape) * self._sigma
        if self._left == 0:
            return intended, False
        self._left -= 1
        executed = np.clip(intended + self._offset, self._low, self._high).astype(np.float32)
        return executed, True
