"""The sample layout: frame stack, history window and delta actions, written once.

A sample at step ``t`` of an episode holds frames ``t-k+1 .. t`` stacked on the channel axis and
telemetry rows ``t-T+1 .. t``, both with the first step repeated before the episode start. The
loader gathers many steps of a decoded episode at once; the runtime sees one observation at a
time. Both call the same `Window.gather` (the runtime over a buffer of the last steps), so a
policy drives on exactly the samples it trained on, bit for bit.

Delta heads (Charles' "discrete delta", model_0001 v4/v5) learn the change of the last executed
action, which the data records as telemetry of the same name (read before acting): the loader
subtracts it from the expert's action, the runtime adds it back to the prediction.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np


def window_indices(steps: np.ndarray, length: int) -> np.ndarray:
    """Steps [n] -> indices [n, length] of ``t-length+1 .. t``, clipped at the episode start."""
    return np.clip(steps[:, None] + np.arange(-length + 1, 1)[None, :], 0, None)


@dataclass(frozen=True)
class Window:
    """The last ``length`` steps of a per-step array (history rows [T, S] -> [n, length, S])."""

    length: int

    def gather(self, values: np.ndarray, steps: np.ndarray) -> np.ndarray:
        """``values[t-length+1 .. t]`` for each step, the first row repeated before the start."""
        return values[window_indices(steps, self.length)]


@dataclass(frozen=True)
class FrameStack(Window):
    """``length`` frames [T, H, W, C] stacked oldest first on the channel axis: [n, k*C, H, W]."""

    def gather(self, values: np.ndarray, steps: np.ndarray) -> np.ndarray:
        frames = super().gather(values, steps)  # [n, k, H, W, C]
        n, k, h, w, c = frames.shape
        return frames.transpose(0, 1, 4, 2, 3).reshape(n, k * c, h, w)


@dataclass(frozen=True)
class DeltaActions:
    """Outputs learnt as changes of the last executed action, and each one's action range."""

    outputs: tuple[str, ...] = ()
    ranges: Mapping[str, tuple[float, float]] = field(default_factory=dict)

    def targets(self, actions: dict[str, np.ndarray], last: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The training targets: the expert's action minus the last one, for delta outputs."""
        out = dict(actions)
        for name in self.outputs:
            out[name] = actions[name] - last[name]
        return out

    def actions(self, predicted: dict[str, float], telemetry: Mapping[str, Any]) -> dict[str, float]:
        """The actions to execute: last action + predicted change, clipped to the range."""
        out = dict(predicted)
        for name in self.outputs:
            low, high = self.ranges.get(name, (-math.inf, math.inf))
            last = float(np.asarray(telemetry[name], np.float32).reshape(-1)[0])
            out[name] = min(max(last + out[name], low), high)
        return out


class SampleStream:
    """Observations one at a time -> the loader's sample of the latest step (a batch of one).

    Keeps only the last ``k`` frames and ``T`` history rows; the windows over them are the
    loader's (`FrameStack`, `Window`), so step ``t`` of a replayed episode is sample ``t``.
    """

    def __init__(self, frames: int, history_signals: Sequence[str] = (), history_length: int = 0) -> None:
        self.stack = FrameStack(frames)
        self.window = Window(max(history_length, 1))
        self.history_signals = list(history_signals)
        self._frames: deque[np.ndarray] = deque(maxlen=self.stack.length)
        self._history: deque[np.ndarray] = deque(maxlen=self.window.length)

    def reset(self) -> None:
        """A new episode: nothing seen yet."""
        self._frames.clear()
        self._history.clear()

    def push(self, frame: np.ndarray, telemetry: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """Add one observation; ``frames`` [1, 3k, H, W] (+ ``history`` [1, T, S]) of this step."""
        self._frames.append(np.asarray(frame))
        last = np.array([len(self._frames) - 1])
        out = {"frames": self.stack.gather(np.stack(self._frames), last)}
        if self.history_signals:
            self._history.append(np.concatenate(
                [np.asarray(telemetry[s], np.float32).reshape(-1) for s in self.history_signals]
            ))
            out["history"] = self.window.gather(np.stack(self._history), np.array([len(self._history) - 1]))
        return out
