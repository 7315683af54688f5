"""Loader throughput with augmentation on vs off (same data, batches, workers, this process).

    python benchmarks/augment.py --dataset PATH [--batches 150] [--repeats 3] [--workers 2]
        [--batch-size 64]

Reads the training split through the trainer's own loader path (`build_order` +
`make_loader` with the inputs' augmenter): plain batches vs batches augmented in the workers with flip, colour jitter,
translation, noise and blur all on (the most expensive setting). Each repeat times
``--batches`` batches after a warm-up pass that decodes every episode into the workers' caches,
so the numbers compare augmentation, not Zarr decoding. Prints medians and the on/off ratio;
the goal is that augmentation does not slow the loader noticeably (ratio close to 1, and the
loader stays well ahead of the training step).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

os.environ.setdefault("SDL_VIDEODRIVER", "dummy")

from drivelab.config import load_config
from drivelab.data.batch_loader import make_loader
from drivelab.order.build import build_order
from drivelab.train.inputs import open_inputs

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "carracing" / "pilotnet.yaml"
FULL = ("data.augment={flip: 0.5, brightness: 0.2, contrast: 0.2, colour: 0.1, translate: 4, "
        "translate_steering: 0.01, noise: 2.0, blur: 0.1}")
LIGHT = "data.augment={flip: 0.5, translate: 4, translate_steering: 0.01}"


def samples_per_s(dataset: Path, augment: str | None, batches: int, workers: int, batch_size: int) -> float:
    overrides = [f"data.path={dataset}", f"data.workers={workers}", f"train.batch_size={batch_size}"]
    if augment:
        overrides.append(augment)
    config = load_config(CONFIG, overrides)
    inputs = open_inputs(config)
    order = build_order(inputs.config, inputs.facts, 0, 1)
    loader = make_loader(inputs.train, order, workers, False, config.seed, augmenter=inputs.augmenter)
    it = iter(loader)
    warm = max(len(inputs.train) // batch_size // max(workers, 1), 10)
    for _ in range(min(warm, 400)):  # decode the episodes into the workers' caches
        next(it)
    started = time.perf_counter()
    for _ in range(batches):
        next(it)
    seconds = time.perf_counter() - started
    del it
    return batches * batch_size / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", type=Path, required=True)
    parser.add_argument("--batches", type=int, default=150)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()
    results: dict[str, list[float]] = {"off": [], "light": [], "full": []}
    for _ in range(args.repeats):  # interleaved, so machine noise hits every setting alike
        for name, augment in (("off", None), ("light", LIGHT), ("full", FULL)):
            results[name].append(samples_per_s(args.dataset, augment, args.batches, args.workers,
                                               args.batch_size))
    off = statistics.median(results["off"])
    for name, values in results.items():
        median = statistics.median(values)
        print(f"{name:6s} median {median:8.0f} samples/s  ratio to off {median / off:.3f}x  "
              f"(runs: {', '.join(f'{v:.0f}' for v in values)})")


if __name__ == "__main__":
    main()
