"""DAgger vs behaviour cloning at the same number of expert-labelled frames, on held-out tracks.

    python benchmarks/dagger_study.py --out DIR [--seeds 3] [--tracks 20] [--episodes 12]
        [--rounds 2] [--batches 600] [--max-steps 300] [--dagger-from STUDY_DIR]

DAgger (`drivelab dagger`, one dataset per seed, since the policy that drives depends on the
seed): round 0 collects ``episodes / (rounds + 1)`` expert episodes and trains
``batches / (rounds + 1)`` batches; each later round drives as many new tracks with the
β-mixture (β = 0.5^round, drawn per step, the expert labelling every frame) and trains as many
batches more from the last checkpoint. Behaviour cloning then gets the same frames: expert
episodes on tracks 0.. (`drivelab collect`) until the dataset holds at least as many frames as
the largest DAgger dataset, and each training seed trains ``--batches`` batches on the first
whole episodes that fit in its DAgger counterpart's frame count (``data.max_frames``). An
episode ends at its lap, so a policy that drives slowly or wanders records more frames than the
expert would on the same tracks: matching frames, not episodes, keeps that from favouring
DAgger. Then every run and the expert drive the same held-out tracks (10000.., never collected
on). ``--dagger-from`` reuses the DAgger runs and datasets of an earlier study with the same
arguments (only BC and the evaluation run again).

Reported per variant: driving score mean ± std over the seeds (each seed's score is its mean
over the tracks), the policy/expert ratio per seed, the worst track, off-track events, laps and
the expert-labelled frames each seed trained on. Everything is written to ``DIR/study.json``;
the table goes to stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

os.environ.setdefault("SDL_VIDEODRIVER", "dummy")

from study_runs import dagger_overrides, dagger_seeds, dataset_frames

from drivelab.config import load_config
from drivelab.data.collect import CollectPlan, collect
from drivelab.data.loader import first_episodes
from drivelab.data.store import DatasetStore
from drivelab.evaluate.drivers import DriverSpec
from drivelab.evaluate.report import evaluate_many
from drivelab.seeds import HELD_OUT_SEED
from drivelab.train import train

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "carracing" / "pilotnet.yaml"


def overrides(dataset: Path, seed: int, batches: int, batch_size: int) -> list[str]:
    return [f"data.path={dataset}", "data.input_size=[64,64]", "data.val_split=null",
            f"seed={seed}", f"train.max_batches={batches}", f"train.batch_size={batch_size}",
            f"train.checkpoint_every={batches}", f"train.val_every={10 * batches}", "train.log_every=50",
            "train.warmup_batches=50"]


def bc_runs(args: argparse.Namespace, out: Path, frames: list[int]) -> tuple[list[str], list[int], float]:
    """BC runs, seed i on (at most) ``frames[i]`` expert frames; returns the runs and their frames."""
    dataset = out / "bc.zarr"
    plan = CollectPlan(env="carracing", seed=0, max_steps=args.max_steps)
    started = time.perf_counter()
    collected = collect(dataset, plan, episodes=args.episodes, workers=1).frames
    while collected < max(frames):
        collected += collect(dataset, plan, episodes=1, workers=1, append=True).frames
    episodes = DatasetStore.open(dataset).episodes()
    runs, used = [], []
    for seed in range(args.seeds):
        config = load_config(CONFIG, [*overrides(dataset, seed, args.batches, args.batch_size),
                                      f"data.max_frames={frames[seed]}"])
        used.append(sum(e.length for e in first_episodes(episodes, frames[seed], str(dataset))))
        runs.append(str(train(config, out / "runs" / f"bc_{seed}").run.path))
        print(f"bc seed {seed}: {used[-1]} frames (DAgger {frames[seed]}), {runs[-1]}", flush=True)
    return runs, used, time.perf_counter() - started


def dagger_runs(args: argparse.Namespace, out: Path, earlier: dict | None) -> tuple[list[str], list[int], float]:
    """DAgger runs, one dataset per seed (or an earlier study's); returns the runs and each dataset's frames."""
    if earlier is not None:
        runs = earlier["runs"]["dagger"]
        return runs, [dataset_frames(args.dagger_from / f"dagger_{seed}.zarr") for seed in range(len(runs))], 0.0
    per_round = args.episodes // (args.rounds + 1)
    round_batches = args.batches // (args.rounds + 1)

    def config_of(seed: int, dataset: Path):
        return load_config(CONFIG, [*overrides(dataset, seed, round_batches, args.batch_size),
                                    *dagger_overrides(args.max_steps, per_round, round_batches, args.batches)])

    return dagger_seeds(config_of, out, args.seeds, args.rounds)


def earlier_dagger_reports(earlier: dict) -> list[dict]:
    """The DAgger runs' held-out reports of an earlier study (its reports are BC, DAgger, expert)."""
    return earlier["reports"][len(earlier["runs"]["bc"]): -1]


def seed_row(report: dict, expert: dict) -> dict:
    rows = report["episodes"]
    score = statistics.fmean(r["score"] for r in rows)
    expert_score = statistics.fmean(r["score"] for r in expert["episodes"])
    worst = min(rows, key=lambda r: r["score"])
    return {"score": score, "ratio": score / expert_score, "worst_track": worst["seed"],
            "worst_score": worst["score"], "off_track": statistics.fmean(r["off_track_events"] for r in rows),
            "laps": sum(r["lap_time_s"] is not None for r in rows)}


def summarise(name: str, seeds: list[dict]) -> str:
    def ms(key: str) -> str:
        values = [s[key] for s in seeds]
        return f"{statistics.fmean(values):.3f} ± {statistics.pstdev(values):.3f}"

    worst = min(seeds, key=lambda s: s["worst_score"])
    return (f"| {name} | {ms('score')} | {ms('ratio')} | {min(s['ratio'] for s in seeds):.3f} | "
            f"{worst['worst_score']:.3f} (track {worst['worst_track']}) | {ms('off_track')} | "
            f"{sum(s['laps'] for s in seeds)}/{len(seeds) * seeds[0]['tracks']} | "
            f"{', '.join(str(s['frames']) for s in seeds)} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--tracks", type=int, default=20)
    parser.add_argument("--episodes", type=int, default=12)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--batches", type=int, default=600)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-steps", type=int, default=300)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--dagger-from", type=Path, default=None,
                        help="reuse the DAgger runs of this earlier study folder (same arguments)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=False)
    earlier = json.loads((args.dagger_from / "study.json").read_text()) if args.dagger_from else None
    dagger, dagger_frames, dagger_s = dagger_runs(args, args.out, earlier)
    bc, bc_frames, bc_s = bc_runs(args, args.out, dagger_frames)
    tracks = list(range(HELD_OUT_SEED, HELD_OUT_SEED + args.tracks))
    started = time.perf_counter()
    reused = earlier_dagger_reports(earlier) if earlier is not None else []
    specs = ([DriverSpec("policy", run=r) for r in bc + (dagger if not reused else [])]
             + [DriverSpec("expert")])
    reports = [r.to_dict() for r in evaluate_many(specs, tracks, workers=args.workers, max_steps=args.max_steps)]
    if reused:
        reports = reports[: len(bc)] + reused + reports[-1:]
    eval_s = time.perf_counter() - started
    expert = reports[-1]
    table = {"bc": [seed_row(r, expert) for r in reports[: len(bc)]],
             "dagger": [seed_row(r, expert) for r in reports[len(bc): -1]]}
    for rows, frames in ((table["bc"], bc_frames), (table["dagger"], dagger_frames)):
        for row, count in zip(rows, frames, strict=True):
            row["tracks"] = len(tracks)
            row["frames"] = count
    expert_score = statistics.fmean(r["score"] for r in expert["episodes"])
    lines = [f"expert: score {expert_score:.3f} on tracks {tracks[0]}..{tracks[-1]}, "
             f"laps {sum(r['lap_time_s'] is not None for r in expert['episodes'])}/{len(tracks)}",
             "| variant | score (mean ± std over seeds) | policy/expert | worst seed ratio | worst track | "
             "off-track events | laps | frames per seed |", "|---|---|---|---|---|---|---|---|",
             summarise("behaviour cloning", table["bc"]), summarise("DAgger", table["dagger"]),
             f"seconds: bc {bc_s:.0f}, dagger {dagger_s:.0f}, eval {eval_s:.0f}"]
    print("\n".join(lines))
    (args.out / "study.json").write_text(json.dumps({
        "args": {k: str(v) for k, v in vars(args).items()}, "runs": {"bc": bc, "dagger": dagger},
        "per_seed": table, "expert_score": expert_score, "reports": reports, "table": lines,
        "load_average": os.getloadavg()}, indent=1, default=str))


if __name__ == "__main__":
    main()
