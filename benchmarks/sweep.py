"""A 4-trial sweep on this machine's cores vs the same 4 runs one after another.

    python benchmarks/sweep.py --dataset PATH [--batches 300] [--rounds 2]

Both sides are the commands a user types: ``drivelab sweep SPEC`` (2 cells x 2 seeds, one core
per trial, as many trials at once as there are cores) and four ``drivelab train CONFIG ...``
with the same overrides, each with every core. Rounds alternate the two so the machine's drift
hits both. Reported: wall-clock of each, their ratio (goal: the sweep is not slower), and the
sweep's own overhead, taken from its ledger: Ray's start-up (launch -> first trial started),
the tail (last trial ended -> command returned: results, figures, shutdown) and the time the
trials spent beyond their training (evaluation is off here, so it is Tune's bookkeeping).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "carracing" / "pilotnet.yaml"
CLI = [sys.executable, "-m", "drivelab.cli"]
LRS = [0.001, 0.0005]
SEEDS = [1, 2]


def overrides(dataset: Path, batches: int) -> dict[str, object]:
    return {
        "data.path": str(dataset), "data.input_size": [64, 64], "train.max_batches": batches,
        "train.val_every": batches, "train.checkpoint_every": batches, "train.log_every": 25,
        "train.precision": "32-true",
    }


def run(command: list[str], cwd: Path) -> float:
    started = time.perf_counter()
    subprocess.run(command, cwd=cwd, check=True, capture_output=True, text=True,
                   env={**os.environ, "SDL_VIDEODRIVER": "dummy"})
    return time.perf_counter() - started


def sweep_once(dataset: Path, batches: int, work: Path) -> dict[str, float]:
    spec = {"name": "bench", "base": str(CONFIG), "overrides": overrides(dataset, batches),
            "grid": {"train.lr": LRS}, "seeds": SEEDS, "trial": {"cpus": 1}}
    (work / "sweep.yaml").write_text(yaml.safe_dump(spec))
    launched = time.time()
    wall = run([*CLI, "sweep", "sweep.yaml", "--out", "out"], work)
    records = [json.loads(p.read_text()) for p in (work / "out" / "trials").glob("*.json")]
    assert len(records) == 4 and all(r["status"] == "finished" for r in records), records
    starts = [datetime.fromisoformat(r["started"]).timestamp() for r in records]
    ends = [datetime.fromisoformat(r["ended"]).timestamp() for r in records]
    return {
        "wall": wall, "startup": min(starts) - launched, "tail": launched + wall - max(ends),
        "trial": statistics.mean(r["seconds"] for r in records),
    }


def sequential_once(dataset: Path, batches: int, work: Path) -> dict[str, float]:
    runs = []
    for lr in LRS:
        for seed in SEEDS:
            sets = {**overrides(dataset, batches), "train.lr": lr, "seed": seed}
            args = [f"{k}={json.dumps(v) if isinstance(v, list) else v}" for k, v in sets.items()]
            runs.append(run([*CLI, "train", str(CONFIG), *args, "--runs", "runs", "--no-progress"], work))
    return {"wall": sum(runs), "run": statistics.mean(runs)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", type=Path, required=True)
    ap.add_argument("--batches", type=int, default=300)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    dataset = args.dataset.resolve()
    sweeps: list[dict[str, float]] = []
    sequential: list[dict[str, float]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for round_ in range(args.rounds):
            for name, fn, rows in (("sweep", sweep_once, sweeps), ("sequential", sequential_once, sequential)):
                work = Path(tmp) / f"{name}{round_}"
                work.mkdir()
                rows.append(fn(dataset, args.batches, work))
                print(f"round {round_ + 1} {name}: {rows[-1]}", flush=True)
    med = {k: statistics.median(r[k] for r in sweeps) for k in sweeps[0]}
    seq = statistics.median(r["wall"] for r in sequential)
    load = os.getloadavg()
    print(f"\n4 trials (lr {LRS} x seeds {SEEDS}), PilotNet 64x64, {args.batches} batches of 64 each; "
          f"{os.cpu_count()} cores; medians of {args.rounds} rounds; load average {load[0]:.2f}\n")
    print("| | wall s (median) | runs |")
    print("|---|---|---|")
    print(f"| drivelab sweep (1 core per trial, {os.cpu_count()} at once) | {med['wall']:.1f} | "
          + ", ".join(f"{r['wall']:.1f}" for r in sweeps) + " |")
    print(f"| 4 x drivelab train, one after another | {seq:.1f} | "
          + ", ".join(f"{r['wall']:.1f}" for r in sequential) + " |")
    print(f"\nsweep / sequential = {med['wall'] / seq:.2f}x")
    one_run = statistics.median(r["run"] for r in sequential)
    print(f"sweep overhead: Ray start-up (launch -> first trial) {med['startup']:.1f} s, tail (last trial -> "
          f"exit: results, figures, shutdown) {med['tail']:.1f} s; a trial takes {med['trial']:.1f} s on 1 "
          f"core next to another vs {one_run:.1f} s for one drivelab train alone on all cores")


if __name__ == "__main__":
    main()
