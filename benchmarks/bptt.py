"""Training throughput of the three BPTT modes: frames per second through `drivelab train`.

    python benchmarks/bptt.py [--dataset PATH] [--frames 12000] [--repeats 2] [--size 64]

tiny_LSTM_net (`configs/pilot/tiny_lstm_net.yaml`) at the seed's settings on the same data:
``window`` 32 windows of 20 frames per batch, ``sliding`` one row per training episode (at most
32) of 20 frames, ``full`` one whole episode per batch. Each mode trains about ``--frames``
frames; its throughput is the real (unpadded) frames trained between two log rows divided by the
wall time between them (data reading, forward, backward and update included), for every log
window after the first (warm-up, cold episode cache). Printed: the median over windows and
repeats per mode, and its ratio to ``window`` measured in the same run. The machine may be
shared and noisy: compare ratios, not absolute numbers, across machines. Without ``--dataset`` a
small real CarRacing dataset (8 episodes) is collected first.
"""

from __future__ import annotations

import argparse
import itertools
import os
import statistics
import tempfile
from pathlib import Path

import numpy as np

os.environ.setdefault("SDL_VIDEODRIVER", "dummy")

from drivelab.config import load_config
from drivelab.data.store import DatasetStore
from drivelab.order.sequences import build_sampler
from drivelab.runs.metrics import read_metrics
from drivelab.train import train

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "pilot" / "tiny_lstm_net.yaml"
MODES = ("window", "sliding", "full")
LOG_EVERY = 5


def settings(mode: str, lengths: list[int], frames: int, window: int) -> tuple[int, int]:
    """(batch size, batches) that train about ``frames`` frames in ``mode``."""
    if mode == "full":
        batch, per_batch = 1, sum(lengths) / len(lengths)
    elif mode == "window":
        batch, per_batch = 32, 32 * window
    else:
        batch = min(32, len(lengths))
        per_batch = batch * window
    batches = max(3 * LOG_EVERY, round(frames / per_batch / LOG_EVERY) * LOG_EVERY)
    return batch, batches


def frames_per_s(dataset: Path, mode: str, frames: int, size: int, window: int, root: Path, seed: int) -> list[float]:
    store = DatasetStore.open(dataset)
    lengths = [e.length for e in store.split_episodes("train")]
    batch, batches = settings(mode, lengths, frames, window)
    cfg = load_config(CONFIG, [
        f"data.path={dataset}", f"data.input_size=[{size},{size}]", "data.workers=0", "data.val_split=null",
        f"seed={seed}", f"train.bptt.mode={mode}", f"train.bptt.window={window}", f"train.batch_size={batch}",
        f"train.max_batches={batches}", f"train.log_every={LOG_EVERY}", "train.val_every=null",
        "train.checkpoint_every=100000",
    ])
    sampler = build_sampler(cfg.train.bptt, np.array(lengths), batch, seed)
    rows_iter = iter(sampler)
    real = [sum(r[2] for r in next(rows_iter)) for _ in range(batches)]  # frames of batch b+1
    result = train(cfg, runs_root=root)
    logged = [r for r in read_metrics(result.run.metrics_path) if "loss" in r]
    speeds = []
    for before, after in itertools.pairwise(logged[1:]):  # the first window warms up
        elapsed = after["time"] - before["time"]
        trained = sum(real[before["batch"] : after["batch"]])
        if elapsed > 0:
            speeds.append(trained / elapsed)
    return speeds


def small_dataset(folder: Path) -> Path:
    from drivelab.data.collect import CollectPlan, collect

    out = folder / "bench.zarr"
    collect(out, CollectPlan(env="carracing", seed=11, max_steps=300), episodes=8, workers=2, val_episodes=0)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", type=Path, default=None)
    parser.add_argument("--frames", type=int, default=12_000, help="frames trained per mode and repeat")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--window", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        dataset = args.dataset or small_dataset(Path(tmp))
        results: dict[str, list[float]] = {m: [] for m in MODES}
        for repeat in range(args.repeats):
            for mode in MODES:
                speeds = frames_per_s(dataset, mode, args.frames, args.size, args.window,
                                      Path(tmp) / f"runs_{repeat}", 123 + repeat)
                results[mode] += speeds
                print(f"repeat {repeat} {mode:8s} windows {[round(s) for s in speeds]}", flush=True)
        base = statistics.median(results["window"])
        print(f"\ndataset {dataset}, input {args.size}x{args.size}, window {args.window}, ~{args.frames} frames per mode")
        print(f"{'mode':8s} {'frames/s (median)':>18s} {'vs window':>10s}")
        for mode in MODES:
            median = statistics.median(results[mode])
            print(f"{mode:8s} {median:18.0f} {median / base:9.2f}x")


if __name__ == "__main__":
    main()
