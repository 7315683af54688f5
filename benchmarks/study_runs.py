"""What the DAgger-vs-BC studies share (`dagger_study.py` on CarRacing, `traffic_study.py`):
the DAgger schedule as overrides, one DAgger run per training seed, and a dataset's frame count.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from drivelab.config import ExperimentConfig
from drivelab.data.store import DatasetStore
from drivelab.live.dagger import run_dagger


def dataset_frames(path: Path) -> int:
    return sum(episode.length for episode in DatasetStore.open(path).episodes())


def dagger_overrides(max_steps: int, round_episodes: int, round_batches: int, batches: int) -> list[str]:
    """Rounds of ``round_episodes`` scenarios, β = 0.5^round drawn per step, ``round_batches`` each."""
    return [f"live.max_steps={max_steps}", f"live.round_episodes={round_episodes}",
            f"live.round_batches={round_batches}", "live.beta.schedule=exponential",
            "live.beta.p=0.5", "live.beta.per=step", f"live.stop.batches={batches}",
            f"train.checkpoint_every={round_batches}"]


def dagger_seeds(config_of: Callable[[int, Path], ExperimentConfig], out: Path, seeds: int,
                 rounds: int) -> tuple[list[str], list[int], float]:
    """One DAgger run per training seed on its own dataset (the policy that drives depends on the
    seed): the runs, each dataset's frames and the seconds it took."""
    started = time.perf_counter()
    runs = []
    for seed in range(seeds):
        summary = run_dagger(config_of(seed, out / f"dagger_{seed}.zarr"), out / "runs" / f"dagger_{seed}",
                             rounds, say=print)
        runs.append(str(summary["run"]))
    frames = [dataset_frames(out / f"dagger_{seed}.zarr") for seed in range(seeds)]
    return runs, frames, time.perf_counter() - started
