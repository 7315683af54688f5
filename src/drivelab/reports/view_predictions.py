"""A run's predictions on chosen episodes, for `drivelab data view --run`.

Read through `drivelab.evaluate.offline.OfflineJob`, so the policy, its processor and the sample
layout (frame stack, history window) are exactly those of `drivelab eval --offline`: what the
page draws beside the labels is what the offline metrics score. Each chosen episode is one batch
sequence of its own split's samples, in order (a recurrent policy gets it as one sequence).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from drivelab.data.batch_loader import make_loader
from drivelab.data.records import EpisodeInfo
from drivelab.data.store import DatasetStore
from drivelab.evaluate.offline import OfflineJob

BATCH = 256


def predict_episodes(run: str, runs_root: str | Path, store: DatasetStore,
                     chosen: Sequence[EpisodeInfo]) -> dict[int, dict[str, np.ndarray]]:
    """``{episode: {output: predicted action per frame}}`` (the head's action, in action units)."""
    wanted = {e.index for e in chosen}
    found: dict[int, dict[str, np.ndarray]] = {}
    for split in sorted({store.split_of(i) for i in wanted}):
        job = OfflineJob(run, split, store.path, runs_root, batch_size=BATCH, workers=0, device="cpu")
        policy, pipeline = job.runtime.policy.eval(), job.runtime.pipeline
        start = 0
        for episode in job.samples.episodes:
            if episode.index in wanted:
                span = range(start, start + episode.length)
                size = episode.length if job.runtime.kind.stateful else BATCH  # as OfflineJob batches
                batches = [list(span[i:i + size]) for i in range(0, len(span), size)]
                parts: dict[str, list[np.ndarray]] = {h.output: [] for h in job.objective.heads}
                with torch.inference_mode():
                    for raw in make_loader(job.samples, batches, 0, pin_memory=False, seed=0):
                        predictions = policy(*pipeline(raw))
                        for head in job.objective.heads:
                            parts[head.output].append(head.action(predictions[head.output]).float().numpy())
                found[episode.index] = {k: np.concatenate(v) for k, v in parts.items()}
            start += episode.length
    return found
