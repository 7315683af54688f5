"""Validation of `drivelab diagnose`: known cases trained with several seeds, diagnosed, tabled.

The detector must be shown to separate the cases it is meant to, so this script trains each
case (small: 64x64 PilotNet, a few hundred batches, on one small DART-noise dataset), runs the
full diagnosis (offline tests on the val split, closed-loop A/B and inertia on held-out
tracks) and writes one row per run plus mean ± std per case:

- ``demo``: the demo policy (frames + a 4-step speed history); must not be flagged; it is also
  the speed-input policy of the inertia test (the data has one standing start per episode);
- ``copycat``: frames that carry little signal (tiny_net on 12x12 frames) and a 20-step
  history of speed, steering and accel_brake; must be flagged;
- ``m0009_prediction`` / ``m0009_thought``: the model_0009 miniature (an LSTM over 30 steps of
  speed, steering, accel_brake) passing its prediction, or its thought vector, to the neck;
- ``copycat_dropout`` / ``copycat_dropout90``: the copycat with ``model.history.dropout=0.5`` / ``0.9``, the remedy;
- ``standstill``: the demo policy trained on the same episodes with ``STANDSTILL_S`` seconds of
  standing still, brake pressed, prepended to each (the car waits at the start line): data in
  which "stopped" mostly means "stay stopped", Codevilla et al.'s inertia mechanism;
  ``standstill_lowres`` the same with frames that carry little signal (tiny_net, 12x12), so
  speed is what tells "stopped"; the inertia test should flag them.

The table's verdicts are redrawn from the saved figures at the current thresholds
(`DiagnosisReport.from_dict`), so a threshold change needs no new drive.

Usage (one process per shard shares the machine's cores):
    python scripts/diagnose_validation.py --data DATA.zarr --root OUT [--cases a,b] [--seeds 0,1,2]
    python scripts/diagnose_validation.py --root OUT --table docs/diagnose_table.md
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from pathlib import Path

import numpy as np

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "carracing" / "pilotnet.yaml"
COPYCAT_HISTORY = "model.history={signals: [speed, steering, accel_brake], length: 20, kind: dense, layers: 1, width: 32}"
M0009 = "model.history={{signals: [speed, steering, accel_brake], length: 30, kind: lstm, layers: 1, width: 32, output: {}}}"
CASES: dict[str, list[str]] = {
    "demo": [],
    "copycat": ["model.backbone.name=tiny", "data.input_size=[12,12]", COPYCAT_HISTORY],
    "m0009_prediction": [M0009.format("prediction")],
    "m0009_thought": [M0009.format("thought")],
    "copycat_dropout": ["model.backbone.name=tiny", "data.input_size=[12,12]", COPYCAT_HISTORY,
                        "model.history.dropout=0.5"],
    "copycat_dropout90": ["model.backbone.name=tiny", "data.input_size=[12,12]", COPYCAT_HISTORY,
                          "model.history.dropout=0.9"],
    "standstill": [],
    "standstill_lowres": ["model.backbone.name=tiny", "data.input_size=[12,12]"],
}
STANDSTILL_S = 2.0
STANDSTILL_DATA = "standstill.zarr"  # next to the runs, built from --data


def _standstill(env_id: str, track_seed: int, steps: int, names: list[str]) -> dict[str, np.ndarray]:
    """``steps`` real observations of the car held still by the brake at the start of a track."""
    from drivelab.sim import make_env

    env = make_env(env_id, max_steps=steps + 1)
    brake = np.array([-1.0 if n == "accel_brake" else 0.0 for n in names], np.float32)
    try:
        obs, seen = env.reset(seed=track_seed), []
        for _ in range(steps):
            seen.append(obs)
            obs = env.step(brake).observation
    finally:
        env.close()
    out = {"frames": np.stack([o.frame for o in seen])}
    for key in seen[0].telemetry:
        out[f"telemetry/{key}"] = np.stack([np.asarray(o.telemetry[key], np.float32).reshape(-1) for o in seen])
    for i, name in enumerate(names):
        out[f"actions/{name}"] = np.full((steps, 1), brake[i], np.float32)
    return out


def standstill_dataset(source: Path, out: Path, seconds: float = STANDSTILL_S) -> Path:
    """``source``'s episodes, each opened by ``seconds`` of standing still with the brake on.

    The prepended steps are real: the same track, reset and held by the brake (frames, speed
    ~0 and last actions as the simulator reports them), each labelled "brake". Then the
    recorded expert episode follows. Splits are kept, so val holds the same tracks.
    """
    from drivelab.data.episode_writer import write_episode
    from drivelab.data.records import EpisodeRecord
    from drivelab.data.store import DatasetStore

    if out.exists():
        return out
    src = DatasetStore.open(source)
    dst = DatasetStore.create(out, src.meta)
    hold = round(seconds * 50)  # CarRacing-v3 steps at 50 fps
    names = [a.name for a in src.meta.actions]
    for e in src.episodes():
        still = _standstill(src.meta.env_id, int(e.attrs["track_seed"]), hold, names)

        def joined(key: str, index: int = e.index, still: dict = still) -> np.ndarray:
            return np.concatenate([still[key].astype(src.read_array(index, key).dtype), src.read_array(index, key)])

        record = EpisodeRecord(
            frames=joined("frames"),
            telemetry={t.name: joined(f"telemetry/{t.name}") for t in src.meta.telemetry},
            actions={name: joined(f"actions/{name}") for name in names},
            reward=np.concatenate([np.zeros(hold, np.float32), src.read_array(e.index, "reward")]),
            perturbed=np.concatenate([np.zeros(hold, bool), src.read_array(e.index, "perturbed")]),
            info={k: v for k, v in e.attrs.items() if k in ("env_id", "track_seed", "return", "progress")})
        write_episode(dst, e.index, record)
    splits = src.attrs["splits"]
    dst.assign_splits(val=splits["val"], test=splits["test"])
    return out


def train_case(case: str, seed: int, data: Path, root: Path, batches: int) -> str:
    """Train one case with one seed (skipped when its run exists); returns the run's name."""
    from drivelab.config import load_config
    from drivelab.train import train

    line = f"{case}_s{seed}"
    if (root / line / f"{line}_v1" / "checkpoints").is_dir():
        return f"{line}_v1"
    overrides = [f"data.path={data}", "data.input_size=[64,64]", "data.workers=0", "data.cache=ram",
                 "train.batch_size=16", f"train.max_batches={batches}", f"train.val_every={batches}",
                 f"train.checkpoint_every={batches}", "train.warmup_batches=20", "train.log_every=50",
                 f"line={line}", f"seed={seed}", *CASES[case]]
    return train(load_config(CONFIG, overrides), runs_root=root).run.name


def diagnose_run(run: str, root: Path, tracks: int, max_steps: int) -> dict:
    from drivelab.diagnose.job import DiagnoseRequest, diagnose
    from drivelab.diagnose.report import save_report

    request = DiagnoseRequest(ref=run, runs_root=root, tracks=tracks, max_steps=max_steps, force=True)
    started = time.perf_counter()
    report = diagnose(request)
    save_report(report, request)
    out = report.to_dict()
    out["total_seconds"] = round(time.perf_counter() - started, 1)
    return out


def measure(args: argparse.Namespace) -> None:
    import torch

    torch.set_num_threads(args.threads)
    root = Path(args.root)
    results = root / "results"
    results.mkdir(parents=True, exist_ok=True)
    for seed in [int(s) for s in args.seeds.split(",")]:
        for case in args.cases.split(","):
            target = results / f"{case}_s{seed}.json"
            if target.is_file():
                continue
            started = time.perf_counter()
            data = standstill_dataset(Path(args.data), root / STANDSTILL_DATA) if case.startswith("standstill") \
                else Path(args.data)
            run = train_case(case, seed, data, root, args.batches)
            train_s = time.perf_counter() - started
            row = diagnose_run(run, root, args.tracks, args.max_steps)
            row.update(case=case, seed=seed, train_seconds=round(train_s, 1), load=os.getloadavg())
            target.write_text(json.dumps(row, indent=1, allow_nan=True) + "\n")
            print(f"{case} seed {seed}: trained {train_s:.0f} s, diagnosed {row['total_seconds']} s", flush=True)


def _figures(row: dict) -> dict[str, float]:
    """The figures one run contributes to the table."""
    from drivelab.diagnose.probe import ProbeResult
    from drivelab.diagnose.verdict import probe_gap

    out: dict[str, float] = {}
    for head, groups in row["reliance"].items():
        out[f"{head} frames share"] = next(g["share"] for g in groups if g["group"] == "frames")
    for head, copy in row["copy_baseline"].items():
        out[f"{head} policy-by-copy R²"] = copy["policy_copy_r2"]
    for head in row["probe"]["outputs"]:
        out[f"{head} probe joint R²"] = row["probe"]["joint_r2"][head]
        out[f"{head} probe frames R²"] = row["probe"]["frames_r2"][head]
        gap = probe_gap(ProbeResult(**row["probe"]), head)
        out[f"{head} probe gap (joint - frames)"] = float("nan") if gap is None else gap
    loop = row.get("closed_loop")
    if loop:
        for name, agg in loop["variants"].items():
            out[f"score {name}"] = agg["score_mean"]
    inertia = row.get("inertia")
    if inertia:
        out["failed starts+restarts"] = inertia["failed_starts"] + inertia["failed_restarts"]
    out["flags"] = sum(f["flagged"] for findings in row["verdicts"].values() for f in findings)
    return out


def _pm(values: list[float]) -> str:
    vals = [v for v in values if not (isinstance(v, float) and math.isnan(v))]
    if not vals:
        return "-"
    mean = sum(vals) / len(vals)
    std = math.sqrt(sum((v - mean) ** 2 for v in vals) / len(vals))
    return f"{mean:.2f} ± {std:.2f}"


def _redrawn(row: dict) -> dict:
    """The row with its verdicts redrawn at today's default thresholds."""
    from drivelab.config.diagnose_section import DiagnoseConfig
    from drivelab.data.store import DatasetStore
    from drivelab.diagnose.report import DiagnosisReport

    if "actions" not in row:  # saved before the report named them
        row["actions"] = [a.name for a in DatasetStore.open(row["dataset"]).meta.actions]
    redrawn = DiagnosisReport.from_dict(row, DiagnoseConfig()).to_dict()
    return {**row, "verdicts": redrawn["verdicts"], "thresholds": redrawn["thresholds"]}


def table(args: argparse.Namespace) -> None:
    rows = [_redrawn(json.loads(p.read_text())) for p in sorted((Path(args.root) / "results").glob("*.json"))]
    lines = ["| case | seed | verdicts (flagged in bold) | offline s | closed loop s/track | inertia s/track |",
             "|---|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: (r["case"], r["seed"])):
        words = []
        for who, findings in r["verdicts"].items():
            for f in findings:
                text = f"{who}: {f['text']} ({f['value']:.2f} vs {f['threshold']:.2f})"
                words.append(f"**{text}**" if f["flagged"] else text)
        loop = r.get("closed_loop") or {}
        inertia = r.get("inertia") or {}
        lines.append(f"| {r['case']} | {r['seed']} | {'<br>'.join(words)} | {r['offline_seconds']:.1f} | "
                     f"{loop.get('seconds_per_track', float('nan')):.1f} | {inertia.get('seconds_per_track', float('nan')):.1f} |")
    cases = sorted({r["case"] for r in rows})
    keys = sorted({k for r in rows for k in _figures(r)})
    lines += ["", "| figure | " + " | ".join(cases) + " |", "|---|" + "---|" * len(cases)]
    for key in keys:
        cells = [_pm([_figures(r).get(key, float("nan")) for r in rows if r["case"] == c]) for c in cases]
        lines.append(f"| {key} | " + " | ".join(cells) + " |")
    text = "\n".join(lines) + "\n"
    if args.table:
        Path(args.table).write_text(text)
    print(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data")
    parser.add_argument("--root", required=True)
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--batches", type=int, default=600)
    parser.add_argument("--tracks", type=int, default=4)
    parser.add_argument("--max-steps", type=int, default=250)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--table")
    args = parser.parse_args()
    if args.data:
        measure(args)
    else:
        table(args)


if __name__ == "__main__":
    main()
