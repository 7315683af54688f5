"""`drivelab demo`: the main job end to end on the embedded defaults.

Each stage calls the same library function as its own verb, so the demo doubles as a smoke test
of the whole path and as a worked example. Every run gets its own time-stamped folder: running
the demo twice never overwrites anything.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from drivelab.data.collect import CollectPlan, CollectSummary, collect
from drivelab.data.inspect import dataset_info, plot_histograms, verify_dataset
from drivelab.data.store import DatasetStore
from drivelab.errors import DrivelabError


@dataclass(frozen=True)
class DemoOptions:
    out: Path
    episodes: int = 6
    workers: int = 2
    seed: int = 0
    noise: float = 0.02
    max_steps: int = 1000


@dataclass
class DemoResult:
    folder: Path
    dataset: Path
    histogram: Path
    collect: CollectSummary
    info: dict
    seconds: float


def new_demo_folder(root: Path) -> Path:
    """A fresh folder under ``root`` named by the start time."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    folder = root / f"demo-{stamp}"
    n = 1
    while folder.exists():
        n += 1
        folder = root / f"demo-{stamp}-{n}"
    folder.mkdir(parents=True)
    return folder


def run_demo(
    options: DemoOptions, on_progress: Callable[[int, int, int], None] | None = None
) -> DemoResult:
    """Collect expert data with noise injection, then inspect and verify it."""
    if options.episodes < 3:
        raise DrivelabError("--episodes must be at least 3 (train, val and test need one each)")
    started = time.perf_counter()
    folder = new_demo_folder(options.out)
    dataset = folder / "data.zarr"
    summary = collect(
        dataset,
        CollectPlan(env="carracing", seed=options.seed, noise=options.noise, max_steps=options.max_steps),
        episodes=options.episodes,
        workers=options.workers,
        val_episodes=1,
        test_episodes=1,
        on_progress=on_progress,
    )
    store = DatasetStore.open(dataset)
    report = verify_dataset(store)
    if not report.ok:
        raise DrivelabError(f"the demo dataset failed verification: {report.problems[0]}")
    histogram = plot_histograms(store, folder / "histograms.png")
    return DemoResult(
        folder=folder,
        dataset=dataset,
        histogram=histogram,
        collect=summary,
        info=dataset_info(store),
        seconds=time.perf_counter() - started,
    )
