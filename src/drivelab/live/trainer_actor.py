"""The live trainer: the one training loop, in periods of ``refresh_every`` batches.

Each period is an ordinary `drivelab.train.train` call — a new run for the first, ``resume`` for
the next — over the dataset's first E committed episodes, E being what was committed when the
period began (``data.max_frames`` = their frames: collectors take indices in commit order, so
that prefix is exactly the committed set). The samplers, balanced buffers and statistics are the
trainer's own, rebuilt over the grown dataset at each period boundary (episodes decoded by an
earlier period are reused, `DecodedEpisodes`), and the run's resume
rules make the result a function of the sequence of windows: the same commits give the same
weights. The window and the total batches are written into the run's ``config.yaml`` before a
resume (the live run's config *is* its current window), and every period's window is recorded
in ``live.jsonl`` so a resumed live run can say what each version saw.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from drivelab.config import ExperimentConfig, dump_config, load_config
from drivelab.data.loader import DecodedEpisodes
from drivelab.data.store import DatasetStore
from drivelab.runs.checkpoints import atomic_write_text
from drivelab.runs.folder import RunFolder
from drivelab.train.trainer import train


def window_frames(dataset: str | Path, train_split: str) -> tuple[int, int]:
    """(episodes, frames) of the train split committed now: the next period's window."""
    store = DatasetStore.open(dataset)
    episodes = store.split_episodes(train_split)
    return len(episodes), sum(e.length for e in episodes)


def period_config(config: ExperimentConfig, batches: int, frames: int) -> ExperimentConfig:
    """The config of a period ending at ``batches`` over the first ``frames`` frames."""
    return config.model_copy(update={
        "train": config.train.model_copy(update={"max_batches": batches, "epochs": None}),
        "data": config.data.model_copy(update={"max_frames": frames}),
    })


class LiveTrainer:
    """The trainer actor's body (it also runs in-process for `drivelab dagger`)."""

    def __init__(self, config: ExperimentConfig, runs_root: str, run: str | None, threads: int | None) -> None:
        from drivelab.sweep.resources import apply_trial_threads

        if threads is not None:  # an actor sharing cores; None: in-process, keep the process's pool
            apply_trial_threads(threads)
        self.config = config
        self.runs_root = Path(runs_root)
        self.run = run
        # committed episodes never change: each is decoded once for all periods, so a period's
        # start-up does not grow with the dataset
        self.decoded = DecodedEpisodes()

    def period(self, until_batch: int) -> dict[str, Any]:
        """Train up to batch ``until_batch`` over what is committed now; the period's row."""
        episodes, frames = window_frames(self.config.data.path, self.config.data.train_split)
        started = time.perf_counter()
        if self.run is None:
            result = train(period_config(self.config, until_batch, frames), self.runs_root, decoded=self.decoded)
            self.run = str(result.run.path)
        else:
            folder = RunFolder.open(self.run)
            config = period_config(load_config(folder.config_path), until_batch, frames)
            atomic_write_text(folder.config_path, dump_config(config))
            result = train(config, self.runs_root, resume=self.run, decoded=self.decoded)
        seconds = time.perf_counter() - started
        trained = result.batches - result.first_batch
        return {
            "run": self.run, "batch": result.batches, "first_batch": result.first_batch,
            "episodes": episodes, "frames": frames, "seconds": round(seconds, 3),
            "samples_per_s": round(trained * self.config.train.batch_size / seconds, 2) if seconds else 0.0,
            "loss": result.train_values.get("loss"), "ended_at": time.time(),
        }
