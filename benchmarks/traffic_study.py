"""The traffic world's policy study: behaviour cloning, DAgger, and BC without the route command.

    python benchmarks/traffic_study.py --out DIR [--env intersection] [--seeds 3] [--scenarios 100]
        [--episodes 60] [--rounds 2] [--batches 1500] [--batch-size 32] [--input 64]

Three variants, ``--seeds`` training seeds each, all scored on the same held-out scenarios
(seeds 10000.., never collected on) next to the expert:

* **DAgger** (`run_dagger`, one dataset per seed since the policy that drives depends on it):
  round 0 collects ``episodes / (rounds + 1)`` expert episodes and trains
  ``batches / (rounds + 1)`` batches; each later round drives as many scenarios with the
  β-mixture (β = 0.5^round, drawn per step, the expert labelling every frame) and trains as many
  batches more from the last checkpoint.
* **Behaviour cloning** on the same expert-labelled frame budget: expert episodes (collected with
  DART noise as `drivelab collect` does by default) until the dataset holds as many frames as
  the largest DAgger dataset; seed i trains ``--batches`` batches on the first whole episodes
  that fit in its DAgger counterpart's frame count (``data.max_frames``).
* **BC without the route command**: the same data and budget as BC, but the policy sees only
  the frame and its speed (``purpose`` and ``command`` dropped from the history). It cannot know
  which exit the route takes: its wrong-exit rate shows whether the command is used (at a
  3-way choice a blind policy should pick the wrong one about 2/3 of the time).

Reported per variant (mean ± std over the seeds, each seed's figure a mean over the scenarios):
success rate, route failures (wrong exit or deviation), collisions and timeouts per episode,
driving score. A difference "exceeds the seed spread" when the two means differ by more than
the sum of their standard deviations. Everything goes to ``DIR/study.json``; the table to stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

os.environ.setdefault("SDL_VIDEODRIVER", "dummy")

from study_runs import dagger_overrides, dagger_seeds

from drivelab.config import load_config
from drivelab.data.collect import CollectPlan, collect
from drivelab.data.loader import first_episodes
from drivelab.data.store import DatasetStore
from drivelab.evaluate.drivers import DriverSpec
from drivelab.evaluate.report import evaluate_many
from drivelab.models.specs_table import machine
from drivelab.seeds import HELD_OUT_SEED
from drivelab.train import train

ROOT = Path(__file__).resolve().parents[1]
BLIND = ["model.history.signals=[speed]", "model.history.signal_sizes={}"]


def config_path(env: str) -> Path:
    return ROOT / "configs" / "traffic" / f"{env.split(':')[0]}_pilotnet.yaml"


def overrides(args: argparse.Namespace, dataset: Path, seed: int, batches: int) -> list[str]:
    return [f"data.path={dataset}", f"data.input_size=[{args.input},{args.input}]", "data.val_split=null",
            f"seed={seed}", f"train.max_batches={batches}", f"train.batch_size={args.batch_size}",
            f"train.checkpoint_every={batches}", f"train.val_every={10 * batches}", "train.log_every=50",
            "train.warmup_batches=50"]


def dagger_runs(args: argparse.Namespace, out: Path) -> tuple[list[str], list[int], float]:
    """DAgger runs, one dataset per seed; the runs and each dataset's frames."""
    per_round = args.episodes // (args.rounds + 1)
    round_batches = args.batches // (args.rounds + 1)

    def config_of(seed: int, dataset: Path):
        return load_config(config_path(args.env), [
            *overrides(args, dataset, seed, round_batches), f"live.env={args.env}",
            *dagger_overrides(args.max_steps, per_round, round_batches, args.batches)])

    return dagger_seeds(config_of, out, args.seeds, args.rounds)


def bc_runs(args: argparse.Namespace, out: Path, frames: list[int]) -> tuple[dict[str, list[str]], list[int], float]:
    """BC runs with and without the command, seed i on (at most) ``frames[i]`` expert frames."""
    dataset = out / "bc.zarr"
    plan = CollectPlan(env=args.env, seed=0, max_steps=args.max_steps)
    started = time.perf_counter()
    collected = collect(dataset, plan, episodes=args.episodes, workers=args.workers).frames
    while collected < max(frames):
        collected += collect(dataset, plan, episodes=4, workers=args.workers, append=True).frames
    episodes = DatasetStore.open(dataset).episodes()
    runs: dict[str, list[str]] = {"bc": [], "bc_no_command": []}
    used = []
    for seed in range(args.seeds):
        used.append(sum(e.length for e in first_episodes(episodes, frames[seed], str(dataset))))
        for variant, extra in (("bc", []), ("bc_no_command", BLIND)):
            config = load_config(config_path(args.env), [
                *overrides(args, dataset, seed, args.batches), f"data.max_frames={frames[seed]}", *extra])
            runs[variant].append(str(train(config, out / "runs" / f"{variant}_{seed}").run.path))
            print(f"{variant} seed {seed}: {used[-1]} frames (DAgger {frames[seed]}), {runs[variant][-1]}",
                  flush=True)
    return runs, used, time.perf_counter() - started


def seed_row(report: dict) -> dict:
    rows = report["episodes"]
    return {"success": statistics.fmean(r["outcome"] == "success" for r in rows),
            "route_failures": statistics.fmean(r["route_failures"] for r in rows),
            "wrong_exits": statistics.fmean(r.get("wrong_exits", 0) for r in rows),
            "collisions": statistics.fmean(r["collisions"] for r in rows),
            "timeouts": statistics.fmean(r["timeouts"] for r in rows),
            "score": statistics.fmean(r["score"] for r in rows)}


KEYS = ("success", "route_failures", "wrong_exits", "collisions", "timeouts", "score")


def mean_std(seeds: list[dict], key: str) -> tuple[float, float]:
    values = [s[key] for s in seeds]
    return statistics.fmean(values), statistics.pstdev(values) if len(values) > 1 else float("nan")


def table_row(name: str, seeds: list[dict], frames: list[int]) -> str:
    cells = [f"{m:.3f} ± {s:.3f}" for m, s in (mean_std(seeds, k) for k in KEYS)]
    return f"| {name} | {' | '.join(cells)} | {', '.join(map(str, frames))} |"


def spread_verdicts(table: dict[str, list[dict]]) -> list[str]:
    """Which differences between variants exceed the seed spread (|Δmean| > std_a + std_b)."""
    lines = []
    names = list(table)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            for key in ("success", "wrong_exits", "score"):
                (ma, sa), (mb, sb) = mean_std(table[a], key), mean_std(table[b], key)
                beyond = abs(ma - mb) > sa + sb
                lines.append(f"{a} vs {b}, {key}: {ma:.3f} vs {mb:.3f} -> "
                             f"{'exceeds' if beyond else 'within'} the seed spread ({sa:.3f} + {sb:.3f})")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--env", default="intersection")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--scenarios", type=int, default=100)
    parser.add_argument("--episodes", type=int, default=60)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--batches", type=int, default=1500)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--input", type=int, default=64)
    parser.add_argument("--max-steps", type=int, default=300)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=False)
    dagger, dagger_frames, dagger_s = dagger_runs(args, args.out)
    bc, bc_frames, bc_s = bc_runs(args, args.out, dagger_frames)
    scenarios = list(range(HELD_OUT_SEED, HELD_OUT_SEED + args.scenarios))
    started = time.perf_counter()
    variants = {"behaviour cloning": bc["bc"], "DAgger": dagger, "BC without command": bc["bc_no_command"]}
    specs = [DriverSpec("policy", run=r) for runs in variants.values() for r in runs] + [DriverSpec("expert")]
    reports = [r.to_dict() for r in evaluate_many(specs, scenarios, env=args.env, workers=args.workers,
                                                  max_steps=args.max_steps)]
    eval_s = time.perf_counter() - started
    table, at = {}, 0
    for name, runs in variants.items():
        table[name] = [seed_row(r) for r in reports[at: at + len(runs)]]
        at += len(runs)
    expert = seed_row(reports[-1])
    frames = {"behaviour cloning": bc_frames, "DAgger": dagger_frames, "BC without command": bc_frames}
    lines = [f"{args.env}, scenarios {scenarios[0]}..{scenarios[-1]}; expert: success {expert['success']:.3f}, "
             f"score {expert['score']:.3f}; CPU {machine()['cpu']}",
             "| variant | success | route failures / ep | wrong exits / ep | collisions / ep | timeouts / ep | driving score | "
             "frames per seed |", "|---|---|---|---|---|---|---|---|",
             *(table_row(name, rows, frames[name]) for name, rows in table.items()),
             *spread_verdicts(table),
             f"seconds: dagger {dagger_s:.0f}, bc (collect + 2 x train) {bc_s:.0f}, eval {eval_s:.0f}"]
    print("\n".join(lines))
    (args.out / "study.json").write_text(json.dumps({
        "args": {k: str(v) for k, v in vars(args).items()}, "runs": {**bc, "dagger": dagger},
        "per_seed": table, "expert": expert, "reports": reports, "table": lines,
        "load_average": os.getloadavg()}, indent=1, default=str))


if __name__ == "__main__":
    main()
