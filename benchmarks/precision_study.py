"""Quality of the fast training setting: the demo recipe in fp32 and fast, 3 seeds each.

    python benchmarks/precision_study.py --dataset PATH [--tracks 20] [--seed 10000]
        [--seeds 123 1 2] [--workers 2] [--work DIR] [--reuse VARIANT:SEED=RUN ...]
        [--out docs/precision.md]

Trains `configs/carracing/pilotnet.yaml` (the demo's config and budget) once per variant and
training seed, drives every policy on the same ``--tracks`` held-out track seeds (10000 and up,
never used for collection) next to the expert, and reports per variant the driving score mean ±
std over *training seeds* (each seed's score is its mean over the tracks), the laps, the training
time and samples/s. ``--reuse fast:123=RUN`` takes a run that was already trained with that
variant and seed (the demo's), so `make demo` doubles as one seed. Finished pieces are cached in
``--work``; an interrupted study re-runs only what is missing.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("SDL_VIDEODRIVER", "dummy")

from drivelab.config import load_config
from drivelab.evaluate.drivers import DriverSpec
from drivelab.evaluate.runner import evaluate
from drivelab.runs.metrics import read_metrics
from drivelab.train import train

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "carracing" / "pilotnet.yaml"
VARIANTS: dict[str, list[str]] = {
    # the recipe as it was: fp32, NCHW, streamed from Zarr by 2 loader workers
    "fp32": ["train.precision=32", "train.channels_last=false", "data.cache=none", "data.workers=2"],
    # the config's own defaults: precision auto (bf16-mixed where the CPU has AMX / AVX-512
    # BF16, else fp32), channels_last, the RAM cache gathered in-process
    "fast": [],
}


def _samples_per_s(run: Path) -> float:
    rows = [r for r in read_metrics(run / "metrics.jsonl") if "samples_per_s" in r]
    return statistics.median(r["samples_per_s"] for r in rows[2:] or rows) if rows else float("nan")


def train_one(variant: str, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    cache = args.work / f"train_{variant}_{seed}.json"
    if cache.exists():
        return json.loads(cache.read_text())
    reused = args.reuse.get(f"{variant}:{seed}")
    if reused is not None:
        out = {"run": str(reused), "train_seconds": None, "reused": True}
    else:
        config = load_config(CONFIG, [f"data.path={args.dataset}", f"seed={seed}",
                                      f"line=precision_{variant}", *VARIANTS[variant]])
        started = time.perf_counter()
        result = train(config, runs_root=args.work / "runs")
        out = {"run": str(result.run.path), "train_seconds": time.perf_counter() - started, "reused": False}
    out["samples_per_s"] = _samples_per_s(Path(out["run"]))
    info = json.loads((Path(out["run"]) / "run.json").read_text())
    out["precision"] = (info.get("speed") or {}).get("precision", "32-true (before train.precision: auto)")
    cache.write_text(json.dumps(out, indent=1))
    return out


def drive(name: str, spec: DriverSpec, seeds: list[int], args: argparse.Namespace) -> dict[str, Any]:
    cache = args.work / f"eval_{name}.json"
    if cache.exists():
        return json.loads(cache.read_text())
    report = evaluate(spec, seeds, workers=args.workers)
    out = {"aggregate": report.aggregate, "rows": [r.to_dict() for r in report.rows]}
    cache.write_text(json.dumps(out, indent=1))
    return out


def _mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def render(results: dict[str, list[dict[str, Any]]], expert: dict[str, Any], args: argparse.Namespace,
           seeds: list[int]) -> str:
    lines = [
        "| variant | precision | seeds | driving score (mean ± std over seeds) | per-seed scores | laps | "
        "train time (s) | samples/s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    summary: dict[str, tuple[float, float]] = {}
    for variant, runs in results.items():
        scores = [r["eval"]["aggregate"]["score_mean"] for r in runs]
        laps = sum(r["eval"]["aggregate"]["laps_finished"] for r in runs)
        episodes = sum(r["eval"]["aggregate"]["episodes"] for r in runs)
        times = [r["train_seconds"] for r in runs if r["train_seconds"]]
        mean, std = _mean_std(scores)
        summary[variant] = (mean, std)
        lines.append(
            f"| {variant} | {runs[0].get('precision') or '-'} | {len(runs)} | {mean:.3f} ± {std:.3f} | "
            + ", ".join(f"{s:.3f}" for s in scores) + f" | {laps}/{episodes} | "
            + (f"{statistics.median(times):.0f}" if times else "-") + " | "
            + f"{statistics.median(r['samples_per_s'] for r in runs):.0f} |"
        )
    a = expert["aggregate"]
    lines.append(f"| expert | - | - | {a['score_mean']:.3f} ± {a['score_std']:.3f} (over tracks) | - | "
                 f"{a['laps_finished']}/{a['episodes']} | - | - |")
    if {"fp32", "fast"} <= summary.keys():
        (m32, s32), (mf, sf) = summary["fp32"], summary["fast"]
        spread = max(s32, sf)
        verdict = "within" if abs(mf - m32) <= spread else "outside"
        lines += ["", f"Difference fast - fp32: {mf - m32:+.3f}; the larger seed spread is {spread:.3f}: "
                  f"the difference is **{verdict}** the seed spread."]
    lines += ["", f"Tracks: held-out seeds {seeds[0]}-{seeds[-1]}, the same for every policy; training "
              f"seeds {', '.join(map(str, args.seeds))}; dataset `{args.dataset}`."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", type=Path, required=True)
    parser.add_argument("--tracks", type=int, default=20)
    parser.add_argument("--seed", type=int, default=10000, help="first held-out track seed")
    parser.add_argument("--seeds", type=int, nargs="+", default=[123, 1, 2], help="training seeds")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--work", type=Path, default=Path("precision_study"))
    parser.add_argument("--reuse", nargs="*", default=[], help="VARIANT:SEED=RUN_FOLDER")
    parser.add_argument("--out", type=Path, default=None, help="write the Markdown table here")
    args = parser.parse_args()
    args.reuse = dict(item.split("=", 1) for item in args.reuse)
    args.work.mkdir(parents=True, exist_ok=True)
    seeds = list(range(args.seed, args.seed + args.tracks))
    results: dict[str, list[dict[str, Any]]] = {}
    for variant in VARIANTS:
        for seed in args.seeds:
            trained = train_one(variant, seed, args)
            trained["eval"] = drive(f"{variant}_{seed}", DriverSpec("policy", trained["run"]), seeds, args)
            results.setdefault(variant, []).append(trained)
            a = trained["eval"]["aggregate"]
            print(f"{variant} seed {seed}: score {a['score_mean']:.3f} ± {a['score_std']:.3f}, "
                  f"laps {a['laps_finished']}/{a['episodes']}", flush=True)
    expert = drive("expert", DriverSpec("expert"), seeds, args)
    table = render(results, expert, args, seeds)
    print(table)
    if args.out is not None:
        args.out.write_text(table, encoding="utf-8")


if __name__ == "__main__":
    main()
