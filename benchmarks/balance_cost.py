"""What balancing costs the trainer: steps/s and samples/s of none vs v3 vs v2 with helper models.

    python benchmarks/balance_cost.py --dataset PATH [--batches 150] [--repeats 3]
        [--size 64] [--batch-size 32]

Trains the same config (`configs/carracing/pilotnet.yaml`) for ``--batches`` steps per setting,
interleaving the settings in every repeat so machine noise hits them alike, and reads the
trainer's own throughput rows (after the first window, which includes start-up). A v2 step runs
one forward/backward per output on that output's own batch (helper models), so with two outputs
it reads twice the samples of a plain step. Prints medians and ratios to ``none``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
from pathlib import Path

os.environ.setdefault("SDL_VIDEODRIVER", "dummy")

from drivelab.config import load_config
from drivelab.runs.metrics import read_metrics
from drivelab.train import train

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "carracing" / "pilotnet.yaml"
SETTINGS = {
    "none": [],
    "v3": ["data.balance.scheme=v3", "data.balance.skip_empty=true"],
    "v2+helpers": ["data.balance.scheme=v2", "data.balance.skip_empty=true"],
}


def measure(dataset: Path, overrides: list[str], args: argparse.Namespace, root: Path) -> tuple[float, float]:
    config = load_config(CONFIG, [
        f"data.path={dataset}", f"train.max_batches={args.batches}", "train.val_every=100000",
        f"train.checkpoint_every={args.batches}", "train.log_every=25", "model.history=null",
        f"train.batch_size={args.batch_size}", f"data.input_size=[{args.size},{args.size}]", *overrides,
    ])
    result = train(config, runs_root=root)
    rows = [r for r in read_metrics(result.run.metrics_path) if "samples_per_s" in r][1:]
    samples = statistics.median(r["samples_per_s"] for r in rows)
    steps = statistics.median(1.0 / max(r["compute_s"] + r["data_wait_s"], 1e-9) for r in rows)
    return steps, samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", type=Path, required=True)
    parser.add_argument("--batches", type=int, default=150)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in SETTINGS}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.repeats):
            for name, overrides in SETTINGS.items():
                results[name].append(measure(args.dataset, overrides, args, Path(tmp)))
    base_steps = statistics.median(s for s, _ in results["none"])
    base_samples = statistics.median(x for _, x in results["none"])
    for name, values in results.items():
        steps = statistics.median(s for s, _ in values)
        samples = statistics.median(x for _, x in values)
        print(f"{name:11s} {steps:6.2f} steps/s ({base_steps / steps:.2f}x slower per step)  "
              f"{samples:6.0f} samples/s ({samples / base_samples:.2f}x)")


if __name__ == "__main__":
    main()
