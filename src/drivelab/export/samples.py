"""Real recorded inputs for the parity check, laid out exactly as the loader lays out samples.

Random tensors would test the graph on inputs no policy ever sees (a uint8 noise frame, a
history of unit-normal speeds); recorded frames and telemetry test it where it will be used. The
stack and window are `processor.layout`'s, the ones the loader and the runtime use, and the
steps of one episode stay in order, so a recurrent policy can be checked over real sequences.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from drivelab.data.store import DatasetStore
from drivelab.errors import DrivelabError
from drivelab.processor.layout import FrameStack, Window
from drivelab.processor.state import ProcessorState


class SampleError(DrivelabError):
    """No recorded data to check the export on (missing split, too few frames)."""


@dataclass(frozen=True)
class EpisodeSamples:
    """Steps 0..n-1 of one recorded episode, as the policy's raw inputs."""

    frames: np.ndarray  # uint8 [n, 3k, H, W] ([B, L, 3k, H, W] for sequences)
    history: np.ndarray | None  # float32 [n, T, S], unstandardised
    last_action: np.ndarray | None  # float32 [n, D]: the delta heads' last executed actions

    def __len__(self) -> int:
        return int(self.frames.shape[0])

    def take(self, start: int, stop: int) -> EpisodeSamples:
        """Samples ``start..stop-1`` (the first axis)."""
        return self._cut((slice(start, stop),))

    def take_steps(self, start: int, stop: int) -> EpisodeSamples:
        """Steps ``start..stop-1`` of a batch of sequences [B, L, ...] (the second axis)."""
        return self._cut((slice(None), slice(start, stop)))

    def _cut(self, cut: tuple[slice, ...]) -> EpisodeSamples:
        return EpisodeSamples(
            self.frames[cut],
            None if self.history is None else self.history[cut],
            None if self.last_action is None else self.last_action[cut],
        )


def read_samples(
    store: DatasetStore, split: str, processor: ProcessorState, count: int, delta_heads: tuple[str, ...]
) -> list[EpisodeSamples]:
    """The first ``count`` steps of ``split``, episode by episode (at least 2 steps each)."""
    episodes = [e for e in store.split_episodes(split) if e.length >= 2]
    if not episodes:
        raise SampleError(f"{store.path} has no {split!r} episodes to check the export on: "
                          "pass --split with a split it has, or --dataset")
    stack = FrameStack(processor.frames.stack)
    window = Window(max(processor.history.length, 1))
    signals = processor.history.signals
    out: list[EpisodeSamples] = []
    left = count
    for info in episodes:
        if left <= 0:
            break
        n = min(info.length, left)
        steps = np.arange(n)
        frames = stack.gather(store.read_array(info.index, "frames")[:n], steps)
        history = None
        if signals:
            rows = np.concatenate(
                [store.read_array(info.index, f"telemetry/{s}")[:n].reshape(n, -1) for s in signals], axis=1
            ).astype(np.float32)
            history = window.gather(rows, steps)
        last = None
        if delta_heads:
            last = np.concatenate(
                [store.read_array(info.index, f"telemetry/{s}")[:n].reshape(n, -1) for s in delta_heads], axis=1
            ).astype(np.float32)
        out.append(EpisodeSamples(frames, history, last))
        left -= n
    if sum(len(e) for e in out) < min(count, 8):
        raise SampleError(f"{store.path} {split!r} holds only {sum(len(e) for e in out)} frames: "
                          "the parity check needs at least 8")
    return out
