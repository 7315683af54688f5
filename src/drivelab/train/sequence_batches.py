"""Sequence rows -> tensors: what a recurrent policy's batches hold, read like single frames.

A row (`drivelab.order.sequences.Row`) names frames of one episode; `SequenceBatches` gathers
them with the frame dataset's own gather (so sequences and single frames decode the same way),
pads them to one length with a mask, and adds each row's earlier frames for a warmup.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from drivelab.config import ExperimentConfig
from drivelab.data.loader import EpisodeFrameDataset
from drivelab.order.sequences import Row


class SequenceBatches(torch.utils.data.Dataset):
    """Rows -> a sequence batch, read with the frame dataset's gather.

    ``frames`` uint8 [B, T, 3k, H, W], ``history`` [B, T, L, S] (with a history branch),
    ``target/<output>`` [B, T, 1], ``mask`` [B, T] (1 for real frames), ``reset`` / ``last`` [B]
    bools; with a warmup, ``warmup/frames`` [B, W, ...], ``warmup/history`` and
    ``warmup/lengths`` [B] hold each row's earlier frames (every ``every``-th, nearest last).
    T is ``steps`` when given (window modes keep one shape), else the longest row.
    """

    def __init__(
        self,
        frames: EpisodeFrameDataset,
        steps: int | None = None,
        warmup_every: int | None = None,
        warmup_frames: int | None = None,
    ) -> None:
        self.frames = frames
        self.steps = steps
        self.warmup_every = warmup_every
        self.warmup_frames = warmup_frames

    def __len__(self) -> int:
        return len(self.frames)

    def __getitems__(self, rows: Sequence[Row]) -> dict[str, torch.Tensor]:
        counts = [r[2] for r in rows]
        steps = self.steps if self.steps is not None else max(counts)
        batch = self._gather([(r[0], np.arange(r[1], r[1] + r[2])) for r in rows], steps)
        batch["reset"] = torch.tensor([r[3] for r in rows])
        batch["last"] = torch.tensor([r[4] for r in rows])
        if self.warmup_every is not None:
            earlier = [(r[0], self._warmup_steps(r[1])) for r in rows]
            longest = max(1, max(len(s) for _, s in earlier))
            warm = self._gather(earlier, longest)
            batch["warmup/frames"] = warm["frames"]
            if "history" in warm:
                batch["warmup/history"] = warm["history"]
            batch["warmup/lengths"] = warm["mask"].sum(dim=1).to(torch.int64)
        return batch

    def _warmup_steps(self, start: int) -> np.ndarray:
        assert self.warmup_every is not None
        steps = np.arange(start - self.warmup_every, -1, -self.warmup_every)[::-1]
        if self.warmup_frames is not None:
            steps = steps[len(steps) - min(len(steps), self.warmup_frames) :]
        return steps

    def _gather(self, parts: Sequence[tuple[int, np.ndarray]], steps: int) -> dict[str, torch.Tensor]:
        """Each row's steps of its episode, zero-padded to ``steps`` with a mask."""
        out: dict[str, np.ndarray] = {}
        mask = np.zeros((len(parts), steps), np.float32)
        for row, (episode, indices) in enumerate(parts):
            mask[row, : len(indices)] = 1.0
            if len(indices) == 0:
                continue
            for key, value in self.frames.gather(episode, indices).items():
                if key not in out:
                    out[key] = np.zeros((len(parts), steps, *value.shape[1:]), value.dtype)
                out[key][row, : len(indices)] = value
        if "frames" not in out:  # no row has any frame (a warmup at every episode's start)
            sample = self.frames.gather(parts[0][0], np.array([0]))
            out = {k: np.zeros((len(parts), steps, *v.shape[1:]), v.dtype) for k, v in sample.items()}
        batch = {key: torch.from_numpy(value) for key, value in out.items()}
        batch["mask"] = torch.from_numpy(mask)
        return batch


def val_rows(lengths: np.ndarray, rank: int = 0, world_size: int = 1) -> list[Row]:
    """Every val episode whole (a rank takes every world_size-th): window 1 with carried state."""
    return [(e, 0, int(lengths[e]), True, True) for e in range(rank, len(lengths), world_size)]


def sequence_inputs(config: ExperimentConfig, dataset: EpisodeFrameDataset) -> SequenceBatches:
    """The training split's sequence reader for the configured mode."""
    bptt = config.train.bptt
    steps = bptt.window if bptt.mode in ("window", "sliding") else None
    if bptt.initial_state == "warmup":
        return SequenceBatches(dataset, steps, bptt.warmup_every, bptt.warmup_frames)
    return SequenceBatches(dataset, steps)
