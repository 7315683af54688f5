"""Balancing study: what each scheme does to the data, and to closed-loop driving.

    python benchmarks/balance_study.py --dataset PATH [--batches 2000] [--tracks 10]
        [--seed 10000] [--workers 2] [--out docs/balancing.md] [--work DIR]

1. ``data balance`` on the dataset for none / v1 / v2 / v3 / v4 / inverse_frequency: per-output
   entropy before/after, frames kept, effective sample size; before/after histograms (PNG).
2. The same config (`configs/carracing/pilotnet.yaml`), data and budget (``--batches`` optimizer
   steps of 64) trained with ``none``, ``v3``, ``inverse_frequency`` and ``v2`` with helper
   models; each policy driven on ``--tracks`` held-out track seeds (plus the expert on the same
   tracks): driving score and reward, mean ± std.
3. The cost of helper models: training samples/s and steps/s (medians over the run's log rows)
   relative to the unbalanced run.

Finished variants are cached in ``--work`` (results JSON per variant), so the script can be
re-run after an interruption and only redoes what is missing. Writes the Markdown report.
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
from drivelab.data.store import DatasetStore
from drivelab.evaluate.drivers import DriverSpec
from drivelab.evaluate.runner import evaluate
from drivelab.order.balance import SCHEMES, BinnedLabels
from drivelab.order.report import balance_report, dataset_labels, plot_balance
from drivelab.runs.metrics import read_metrics
from drivelab.train import train

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "carracing" / "pilotnet.yaml"
VARIANTS: dict[str, list[str]] = {
    "none": [],
    "v3": ["data.balance.scheme=v3", "data.balance.skip_empty=true"],
    "inverse_frequency": ["data.balance.scheme=inverse_frequency", "data.balance.skip_empty=true"],
    "v2+helpers": ["data.balance.scheme=v2", "data.balance.skip_empty=true"],
}
DATA_SCHEMES = ("none", "v1", "v2", "v3", "v4", "inverse_frequency")


def data_part(dataset: Path, figures: Path) -> list[dict[str, Any]]:
    store = DatasetStore.open(dataset)
    values, binnings = dataset_labels(store, None, "v2")
    binned = BinnedLabels.from_values(values, binnings)
    rows = []
    for scheme in DATA_SCHEMES:
        assert scheme in SCHEMES
        report = balance_report(binned, scheme, seed=0, skip_empty=True)
        plot = plot_balance(report, figures / f"balance_{scheme}.png")
        outputs = report["outputs"]
        rows.append({
            "scheme": scheme,
            "kept": report["frames_kept"],
            "unique": report["unique_frames"],
            "ess": report["effective_sample_size"],
            "steering_before": outputs["steering"]["entropy_before"],
            "steering_after": outputs["steering"]["entropy_after"],
            "steering_max": outputs["steering"]["entropy_max"],
            "pedal_after": outputs["accel_brake"]["entropy_after"],
            "pedal_max": outputs["accel_brake"]["entropy_max"],
            "plot": plot.name,
        })
        print(f"{scheme:18s} steering entropy {rows[-1]['steering_after']:.3f} bits, kept {rows[-1]['kept']}")
    return rows


def run_variant(name: str, overrides: list[str], args: argparse.Namespace, seeds: list[int]) -> dict[str, Any]:
    cache = args.work / f"{name}.json"
    if cache.exists():
        return json.loads(cache.read_text())
    config = load_config(CONFIG, [
        f"data.path={args.dataset}", f"train.max_batches={args.batches}", "train.val_every=500",
        "train.checkpoint_every=500", f"line=balance_{name.replace('+', '_')}",
        f"train.batch_size={args.batch_size}", f"data.input_size=[{args.size},{args.size}]", *overrides,
    ])
    started = time.perf_counter()
    result = train(config, runs_root=args.work / "runs")
    seconds = time.perf_counter() - started
    rows = [r for r in read_metrics(result.run.metrics_path) if "samples_per_s" in r]
    samples = statistics.median(r["samples_per_s"] for r in rows[2:] or rows)
    per_step = samples / (config.train.batch_size * (2 if config.data.balance.scheme == "v2" else 1))
    # (samples/s counts every helper's batch: a v2 step reads one batch per output)
    report = evaluate(DriverSpec("policy", str(result.run.path)), seeds, workers=args.workers)
    out = {
        "variant": name, "run": str(result.run.path), "train_seconds": seconds,
        "samples_per_s": samples, "steps_per_s": per_step, "val": result.val_values,
        "aggregate": report.aggregate, "episodes": [r.to_dict() for r in report.rows],
    }
    cache.write_text(json.dumps(out, indent=1))
    return out


def expert(args: argparse.Namespace, seeds: list[int]) -> dict[str, Any]:
    cache = args.work / "expert.json"
    if cache.exists():
        return json.loads(cache.read_text())
    report = evaluate(DriverSpec("expert"), seeds, workers=args.workers)
    out = {"aggregate": report.aggregate}
    cache.write_text(json.dumps(out, indent=1))
    return out


def render(data_rows: list[dict[str, Any]], variants: list[dict[str, Any]], reference: dict[str, Any],
           args: argparse.Namespace, seeds: list[int]) -> str:
    base = next(v for v in variants if v["variant"] == "none")
    lines = [
        "# Balancing study",
        "",
        f"Generated by `benchmarks/balance_study.py --dataset {args.dataset.name} --batches "
        f"{args.batches} --tracks {len(seeds)} --seed {seeds[0]}` on a 2-core CPU (no GPU).",
        "Dataset: 32 CarRacing expert episodes (DART noise 0.03, track seeds 1-32; 28 train / 4 val,",
        "25,673 frames). Bins: the Charles v2 preset (0.1-wide + exact 0; pedal also exact -1 and 1),",
        "empty bins dropped (`skip_empty`: the expert never steers beyond the car's ±0.4 lock).",
        "",
        "## What each scheme does to the data (`drivelab data balance --scheme S --skip-empty`)",
        "",
        "| scheme | frames kept | unique | effective sample size | steering entropy (bits) | accel_brake entropy |",
        "|---|---|---|---|---|---|",
    ]
    for r in data_rows:
        lines.append(
            f"| {r['scheme']} | {r['kept']:,} | {r['unique']:,} | {r['ess']:,.0f} | "
            f"{r['steering_after']:.3f} / {r['steering_max']:.3f} | {r['pedal_after']:.3f} / {r['pedal_max']:.3f} |"
        )
    lines += [
        "",
        "Entropy is shown as after / maximum (log2 of the non-empty bins); before balancing the",
        f"steering entropy is {data_rows[0]['steering_before']:.3f} bits. Histograms (before left,",
        "after right): " + ", ".join(f"[{r['scheme']}](figures/{r['plot']})" for r in data_rows) + ".",
        "",
        "## Closed loop: same data, same budget",
        "",
        f"`configs/carracing/pilotnet.yaml` at {args.size}x{args.size} input, {args.batches} optimizer "
        f"steps of {args.batch_size} samples per output batch, seed 123; driven on",
        f"held-out track seeds {seeds[0]}-{seeds[-1]} (never in the training data).",
        "",
        "| variant | driving score | reward | min reward | laps | val loss | samples/s | steps/s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for v in [*variants, {"variant": "expert", **reference}]:
        a = v["aggregate"]
        val = v.get("val", {}).get("val/loss")
        lines.append(
            f"| {v['variant']} | {a['score_mean']:.3f} ± {a['score_std']:.3f} | "
            f"{a['reward_mean']:.1f} ± {a['reward_std']:.1f} | {a['reward_min']:.1f} | "
            f"{a['laps_finished']}/{a['episodes']} | {'' if val is None else f'{val:.4f}'} | "
            f"{v.get('samples_per_s', float('nan')):.0f} | {v.get('steps_per_s', float('nan')):.2f} |"
        )
    helper = next((v for v in variants if v["variant"] == "v2+helpers"), None)
    if helper is not None:
        lines += [
            "",
            "## Cost of helper models",
            "",
            f"v2 with helper models: {helper['steps_per_s']:.2f} steps/s vs {base['steps_per_s']:.2f} "
            f"without balancing = **{base['steps_per_s'] / helper['steps_per_s']:.2f}x slower per step** "
            f"({helper['samples_per_s']:.0f} vs {base['samples_per_s']:.0f} samples/s: each step reads "
            "one batch per output, two outputs here). The seed's ~3x was with three outputs.",
        ]
    lines += ["", "Val loss is on the unbalanced val split (what the policy meets when driving)."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", type=Path, required=True)
    parser.add_argument("--batches", type=int, default=2000)
    parser.add_argument("--tracks", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--size", type=int, default=96, help="input size (square) of the policy")
    parser.add_argument("--seed", type=int, default=10000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "balancing.md")
    parser.add_argument("--work", type=Path, default=Path("balance_study"))
    parser.add_argument("--only", nargs="*", default=list(VARIANTS))
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    figures = args.out.parent / "figures"
    figures.mkdir(parents=True, exist_ok=True)
    seeds = list(range(args.seed, args.seed + args.tracks))
    data_rows = data_part(args.dataset, figures)
    variants = []
    for name in args.only:
        variants.append(run_variant(name, VARIANTS[name], args, seeds))
        a = variants[-1]["aggregate"]
        print(f"{name:18s} score {a['score_mean']:.3f} ± {a['score_std']:.3f}  reward {a['reward_mean']:.1f}")
    reference = expert(args, seeds)
    args.out.write_text(render(data_rows, variants, reference, args, seeds), encoding="utf-8")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
