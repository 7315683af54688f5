"""A split's samples in memory, with the last executed action of every sample beside them.

Permutation tests and linear probes need the whole split at once (a permutation mixes samples
from anywhere in it), and the previous-action probe needs the action the car executed just
before each sample, which the dataset records as telemetry of the same name (read before
acting, as delta heads use it). Samples come from the offline evaluator's own dataset
(`OfflineJob.samples`), so the layout is the trainer's.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from drivelab.data.loader import EpisodeFrameDataset
from drivelab.errors import DrivelabError


@dataclass
class SplitSamples:
    """Raw samples (uint8 frames, raw history, targets) and the previous action per output."""

    batch: dict[str, torch.Tensor]
    previous: dict[str, torch.Tensor]  # output -> [N] last executed action

    def __len__(self) -> int:
        return int(self.batch["frames"].shape[0])


def load_split(dataset: EpisodeFrameDataset, outputs: list[str], max_samples: int | None = None) -> SplitSamples:
    """Every sample of ``dataset`` (or ``max_samples`` evenly spaced ones), previous actions included.

    An output without telemetry of its own name (no recorded last action) has no previous
    action; the probe and the copy baseline then skip it.
    """
    n = len(dataset)
    if n == 0:
        raise DrivelabError(f"{dataset.store.path} split {dataset.split!r} has no samples to diagnose")
    index = np.arange(n) if max_samples is None or n <= max_samples else np.linspace(0, n - 1, max_samples).astype(np.int64)
    batch = dataset.__getitems__(index.tolist())
    recorded = {s.name for s in dataset.store.meta.telemetry}
    previous = {}
    for output in outputs:
        if output not in recorded:
            continue
        values = np.concatenate([dataset.signal(e.index, f"telemetry/{output}").reshape(e.length, -1)[:, 0]
                                 for e in dataset.episodes])
        previous[output] = torch.from_numpy(values[index].astype(np.float32))
    return SplitSamples(batch, previous)


def blank_frames(samples: SplitSamples) -> np.ndarray:
    """The frame stack a blind policy sees: every pixel the split's mean colour, uint8 [3k, H, W].

    A per-channel mean (not a per-pixel mean image) so no average road layout leaks through.
    """
    frames = samples.batch["frames"]
    mean = frames.float().mean(dim=(0, 2, 3))
    return mean.round().clamp(0, 255).to(torch.uint8)[:, None, None].expand(frames.shape[1:]).numpy().copy()
