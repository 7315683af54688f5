"""The trainer sharing two cores with one busy process: before and after drivelab's settings.

    python benchmarks/sharing.py --dataset PATH [--batches 200] [--repeats 3]

The brief's figures on this 2-core machine: the trainer alone 935 samples/s, next to one busy
process 312 with OpenMP's default wait policy and 517 with ``OMP_WAIT_POLICY=PASSIVE``. This
script measures, each in a fresh process (OpenMP reads its environment once, when it loads):

- ``bare``: the hand-written loop of `benchmarks/trainer.py`, alone, default environment;
- ``before``: `drivelab train` with no settings (torch's default threads = all cores, OpenMP's
  default wait policy), alone and next to the busy process;
- ``after``: what `drivelab.sweep.resources` gives a trial — passive waits and the trial's own
  thread count: all cores when it reserved all of them (alone), one core when it reserved one
  (next to the busy process, which holds the other).

The busy process is a pure-Python spin loop: one core's worth of work that never yields, the
worst neighbour a trial can have. Medians over repeats of the trainer's log windows; rounds are
interleaved so drift in the machine's load hits every row alike.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
BUSY = "while True:\n    pass\n"
CORES = os.cpu_count() or 1


def child(kind: str, dataset: str, batches: int, threads: int | None) -> None:
    """One measurement in this (fresh) process; prints the median samples/s as JSON."""
    os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
    import torch

    if threads is not None:
        torch.set_num_threads(threads)
    sys.path.insert(0, str(HERE))
    from trainer import CONFIG, bare_run, drivelab_run  # the trainer benchmark's own two loops

    from drivelab.config import load_config

    cfg = load_config(CONFIG, [f"data.path={dataset}", f"train.max_batches={batches}",
                               f"train.checkpoint_every={batches}", f"train.val_every={batches}",
                               "train.log_every=10", "train.precision=32-true", "train.channels_last=false",
                               "train.warmup_batches=0"])
    if kind == "bare":
        rates, _ = bare_run(cfg, batches, bf16=False, channels_last=False)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            rates, _ = drivelab_run(cfg, Path(tmp))
    print(json.dumps({"samples_per_s": statistics.median(rates), "threads": torch.get_num_threads()}))


def measure(kind: str, env: dict[str, str], threads: int | None, busy: bool, args: argparse.Namespace) -> float:
    """Run one child (with the spin loop beside it if ``busy``); its median samples/s."""
    neighbour = subprocess.Popen([sys.executable, "-c", BUSY]) if busy else None
    try:
        command = [sys.executable, __file__, "--child", kind, "--dataset", str(args.dataset),
                   "--batches", str(args.batches)]
        if threads is not None:
            command += ["--threads", str(threads)]
        done = subprocess.run(command, env={**os.environ, **env}, capture_output=True, text=True, check=True)
    finally:
        if neighbour is not None:
            neighbour.kill()
            neighbour.wait()
    return float(json.loads(done.stdout.strip().splitlines()[-1])["samples_per_s"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", type=Path, required=True)
    ap.add_argument("--batches", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--child", choices=["bare", "drivelab"])
    ap.add_argument("--threads", type=int)
    args = ap.parse_args()
    if args.child:
        child(args.child, str(args.dataset), args.batches, args.threads)
        return

    sys.path.insert(0, str(HERE.parent / "src"))
    from drivelab.sweep.resources import worker_env

    default = {k: v for k, v in os.environ.items() if not k.startswith(("OMP_", "MKL_", "OPENBLAS_"))}
    os.environ.clear()
    os.environ.update(default)
    rows = {
        "bare loop, alone (default env)": ("bare", {}, None, False),
        "before: drivelab alone (default env)": ("drivelab", {}, None, False),
        "before: drivelab + busy process": ("drivelab", {}, None, True),
        f"after: drivelab alone (passive, {CORES} threads)": ("drivelab", worker_env(CORES), CORES, False),
        "after: drivelab + busy process (passive, 1 thread)": ("drivelab", worker_env(1), 1, True),
        f"passive, {CORES} threads + busy process": ("drivelab", worker_env(CORES), CORES, True),
    }
    results: dict[str, list[float]] = {name: [] for name in rows}
    for round_ in range(args.repeats):
        for name, (kind, env, threads, busy) in rows.items():
            results[name].append(measure(kind, env, threads, busy, args))
            print(f"round {round_ + 1}: {name}: {results[name][-1]:.0f} samples/s", flush=True)
    medians = {name: statistics.median(values) for name, values in results.items()}
    bare = medians["bare loop, alone (default env)"]
    solo_before = medians["before: drivelab alone (default env)"]
    solo_after = medians[f"after: drivelab alone (passive, {CORES} threads)"]
    load = os.getloadavg()
    print(f"\n{CORES} cores, batch 64, {args.batches} batches per run, medians of {args.repeats} "
          f"(load average at the end {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f})\n")
    print("| setting | samples/s (median) | runs | vs its solo figure | vs bare loop |")
    print("|---|---|---|---|---|")
    for name, values in results.items():
        solo = solo_before if name.startswith("before") else solo_after
        vs_solo = f"{medians[name] / solo:.2f}x" if "busy" in name else ""
        runs = ", ".join(f"{v:.0f}" for v in values)
        print(f"| {name} | {medians[name]:.0f} | {runs} | {vs_solo} | {medians[name] / bare:.2f}x |")


if __name__ == "__main__":
    main()
