"""The seed-004 BPTT study: tiny_LSTM_net trained with full / window / sliding, three seeds each.

Every run trains on the same number of frames (``--frames``), so the modes differ only in how
the frames are cut into sequences and how many SGD updates that makes: ``window`` 32 windows of
20 frames per batch, ``sliding`` one row per training episode (at most 32) of 20 frames, ``full``
one whole episode per batch. Then each run drives the held-out tracks (``drivelab eval``), and
``--report`` collects driving scores and draws every run's validation-loss curve in one figure.

    python scripts/bptt_study.py --data /work/studies/cr32.zarr --runs /work/studies/bptt/runs
    python scripts/bptt_study.py --runs /work/studies/bptt/runs --report --figure docs/figures/bptt_val_loss.png
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

MODES = ("full", "window", "sliding")
SEEDS = (123, 456, 789)
CONFIG = Path(__file__).resolve().parents[1] / "configs" / "pilot" / "tiny_lstm_net.yaml"
DRIVELAB = [sys.executable, "-m", "drivelab.cli"]


def train_episodes(data: Path) -> tuple[int, float]:
    """(training episodes, mean training episode length) of the dataset."""
    from drivelab.data.store import DatasetStore

    episodes = DatasetStore.open(data).split_episodes("train")
    return len(episodes), sum(e.length for e in episodes) / len(episodes)


def plan(mode: str, frames: int, episodes: int, mean_length: float, window: int, points: int) -> dict[str, int]:
    """Batch size, batches and validation cadence that give ``mode`` about ``frames`` frames."""
    if mode == "full":
        batch, per_batch = 1, mean_length
    elif mode == "window":
        batch, per_batch = 32, 32 * window
    else:
        batch = min(32, episodes)
        per_batch = batch * window
    batches = max(1, round(frames / per_batch))
    return {"batch_size": batch, "batches": batches, "val_every": max(1, batches // points)}


def line(mode: str, seed: int) -> str:
    return f"bptt_{mode}_s{seed}"


def run_path(runs: Path, mode: str, seed: int) -> Path:
    return runs / line(mode, seed) / f"{line(mode, seed)}_v1"


def train_one(args: argparse.Namespace, mode: str, seed: int, settings: dict[str, int]) -> str:
    if (run_path(args.runs, mode, seed) / "checkpoints").is_dir():
        return f"{line(mode, seed)}: exists, skipped"
    overrides = [
        f"line={line(mode, seed)}",
        f"seed={seed}",
        f"data.path={args.data}",
        f"data.input_size=[{args.size},{args.size}]",
        "data.workers=0",
        f"train.bptt.mode={mode}",
        f"train.bptt.window={args.window}",
        f"train.batch_size={settings['batch_size']}",
        f"train.max_batches={settings['batches']}",
        f"train.val_every={settings['val_every']}",
        "train.checkpoint_every=100000",
        "train.log_every=5",
        f"train.lr={args.lr}",
    ]
    cmd = ["nice", "-n", "10", *DRIVELAB, "train", str(CONFIG), *overrides, "--runs", str(args.runs), "--no-progress"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "SDL_VIDEODRIVER": "dummy"}
    args.runs.mkdir(parents=True, exist_ok=True)
    with open(args.runs / f"{line(mode, seed)}.train.log", "w") as log:
        done = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    return f"{line(mode, seed)}: rc={done.returncode}"


def eval_one(args: argparse.Namespace, mode: str, seed: int, first: int = 0, count: int | None = None) -> str:
    """Drive tracks ``10000 + first`` .. on the run; one JSON per block of tracks.

    A ``.running`` marker per block lets several drivers share the work; output goes to a log
    file, so a driver that dies does not take its evaluations down with a broken pipe.
    """
    count = args.tracks if count is None else count
    path = run_path(args.runs, mode, seed)
    out = path / f"bptt_eval_{first}.json"
    marker = path / f"bptt_eval_{first}.running"
    if out.exists() or marker.exists():
        return f"{line(mode, seed)}: eval block {first} exists or is running elsewhere"
    marker.touch()
    cmd = ["nice", "-n", "10", *DRIVELAB, "eval", str(path), "--episodes", str(count), "--seed", str(10000 + first),
           "--workers", "2", "--json", str(out), "--runs", str(args.runs)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "SDL_VIDEODRIVER": "dummy"}
    with open(path / f"bptt_eval_{first}.log", "w") as log:
        done = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    marker.unlink(missing_ok=True)
    return f"{line(mode, seed)} eval tracks {first}..{first + count - 1}: rc={done.returncode}"


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(row) for row in path.read_text().splitlines() if row.strip()]


def scores_of(eval_json: Path) -> list[float]:
    """Per-track driving scores from a `drivelab eval --json` file."""
    data = json.loads(eval_json.read_text())
    driver = data["drivers"][0]
    return [float(e["score"]) for e in driver["episodes"] if e.get("failed") is None]


def run_scores(path: Path) -> list[float]:
    """Every driven track's score of a run: the whole eval, or its blocks of tracks."""
    return [s for block in sorted(path.glob("bptt_eval_*.json")) for s in scores_of(block)]


def report(args: argparse.Namespace) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = {"full": "tab:blue", "window": "tab:green", "sliding": "tab:red"}
    fig, (ax, ax_steer) = plt.subplots(1, 2, figsize=(11, 4.2))
    table = []
    per_run: list[dict] = []
    for mode in MODES:
        scores: list[float] = []
        finals: list[float] = []
        speeds: list[float] = []
        for seed in SEEDS:
            path = run_path(args.runs, mode, seed)
            if not path.is_dir():
                continue
            rows = read_jsonl(path / "metrics.jsonl")
            val = [(r["batch"], r["val/loss"]) for r in rows if "val/loss" in r]
            frames_per_batch = _frames_per_batch(path)
            xs = [b * frames_per_batch / 1000 for b, _ in val]
            style = {"color": colours[mode], "alpha": 0.8, "linestyle": ("-", "--", ":")[SEEDS.index(seed)]}
            label = f"{mode} s{seed}"
            ax.plot(xs[1:], [v for _, v in val][1:], label=label, **style)  # batch 0 (untrained) off-scale
            steer = [r["val/steering_mean_absolute_error"] for r in rows if "val/loss" in r]
            ax_steer.plot(xs[1:], steer[1:], label=label, **style)
            finals.append(val[-1][1])
            train_rows = [r for r in rows if "loss" in r]
            late = [r["loss"] for r in train_rows[len(train_rows) // 2 :]]
            steering = [r["val/steering_mean_absolute_error"] for r in rows if "val/loss" in r]
            mine = run_scores(path)
            per_run.append({
                "run": line(mode, seed),
                "val_loss_final": round(val[-1][1], 4),
                "val_loss_best": round(min(v for _, v in val), 4),
                "val_rises": sum(1 for (_, a), (_, b) in itertools.pairwise(val) if b > a),
                "val_steering_mae_final": round(steering[-1], 4),
                "train_loss_late_std": round(statistics.pstdev(late), 4) if len(late) > 1 else None,
                "grad_norm_max": round(max(r.get("grad_norm", 0.0) for r in train_rows), 3),
                "score_mean": round(statistics.fmean(mine), 4) if mine else None,
                "tracks": len(mine),
            })
            speeds += [r["samples_per_s"] for r in rows if "samples_per_s" in r][1:]
            scores += run_scores(path)
        if not finals:
            continue
        table.append({
            "mode": mode,
            "runs": len(finals),
            "final_val_loss_mean": statistics.fmean(finals),
            "final_val_loss_std": statistics.pstdev(finals) if len(finals) > 1 else 0.0,
            "score_mean": statistics.fmean(scores) if scores else math.nan,
            "score_std": statistics.pstdev(scores) if len(scores) > 1 else math.nan,
            "tracks": len(scores),
            "logged_frames_per_s_median": statistics.median(speeds) if speeds else math.nan,
        })
    ax.set_ylabel("val loss (steering + accel_brake MSE per frame)")
    ax_steer.set_ylabel("val steering mean absolute error")
    for axis in (ax, ax_steer):
        axis.set_xlabel("training frames (thousands)")
        axis.grid(alpha=0.3)
    ax_steer.legend(fontsize=7, ncol=3)
    fig.suptitle("tiny_LSTM_net on CarRacing: full / window / sliding BPTT, validation with carried state")
    fig.tight_layout()
    args.figure.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.figure, dpi=120)
    print(json.dumps({"modes": table, "runs": per_run}, indent=2))


def _frames_per_batch(path: Path) -> float:
    """Frames one batch trained, from the run's config (mean episode length for full)."""
    import yaml

    config = yaml.safe_load((path / "config.yaml").read_text())
    bptt = config["train"]["bptt"]
    batch = config["train"]["batch_size"]
    if bptt["mode"] == "full":
        _, mean_length = train_episodes(Path(config["data"]["path"]))
        return batch * mean_length
    return batch * bptt["window"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("/work/studies/cr32.zarr"))
    parser.add_argument("--runs", type=Path, default=Path("/work/studies/bptt/runs"))
    parser.add_argument("--frames", type=int, default=64_000, help="training frames per run")
    parser.add_argument("--size", type=int, default=64, help="input size (square)")
    parser.add_argument("--window", type=int, default=20)
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--points", type=int, default=8, help="validation points per run")
    parser.add_argument("--parallel", type=int, default=3)
    parser.add_argument("--tracks", type=int, default=10)
    parser.add_argument("--eval-parallel", type=int, default=2, help="runs driven at the same time")
    parser.add_argument("--skip-eval", action="store_true")
    parser.add_argument("--report", action="store_true", help="only collect the table and draw the figure")
    parser.add_argument("--figure", type=Path, default=Path("docs/figures/bptt_val_loss.png"))
    args = parser.parse_args()
    if args.report:
        report(args)
        return
    episodes, mean_length = train_episodes(args.data)
    jobs = []
    for seed in SEEDS:
        for mode in MODES:
            settings = plan(mode, args.frames, episodes, mean_length, args.window, args.points)
            print(mode, seed, settings, flush=True)
            jobs.append((mode, seed, settings))
    evaluators = []
    if not args.skip_eval:  # drive each run as soon as it is trained, beside the training
        # Two blocks of tracks per run, first blocks of every run before any second block, so
        # a study cut short still has every run driven on the same tracks.
        half = args.tracks // 2
        blocks = [(m, sd, 0, half) for m, sd, _ in jobs] + [(m, sd, half, args.tracks - half) for m, sd, _ in jobs]
        queue = list(blocks)
        lock = threading.Lock()
        for _ in range(args.eval_parallel):
            evaluators.append(threading.Thread(target=evaluate_as_trained, args=(args, queue, lock)))
            evaluators[-1].start()
    while any(status(args.runs, mode, seed) == "training" for mode, seed, _ in jobs):
        time.sleep(20)  # runs another driver started are still training: let them finish first
    with ThreadPoolExecutor(args.parallel) as pool:
        for message in pool.map(lambda job: train_one(args, *job), jobs):
            print(message, flush=True)
    for evaluator in evaluators:
        evaluator.join()


def status(runs: Path, mode: str, seed: int) -> str:
    path = run_path(runs, mode, seed) / "run.json"
    try:
        return str(json.loads(path.read_text()).get("status"))
    except (OSError, ValueError):
        return "missing"


def evaluate_as_trained(args: argparse.Namespace, queue: list[tuple[str, int, int, int]], lock: threading.Lock) -> None:
    """Take the next block whose run has finished training; drive it."""
    while True:
        with lock:
            if not queue:
                return
            ready = [b for b in queue if status(args.runs, b[0], b[1]) not in ("missing", "training")]
            block = ready[0] if ready else None
            if block is not None:
                queue.remove(block)
        if block is None:
            time.sleep(20)
            continue
        print(eval_one(args, *block), flush=True)


if __name__ == "__main__":
    main()
