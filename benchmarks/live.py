"""The live loop on this machine vs its trainer alone and its collector alone, in one sitting.

    python benchmarks/live.py --out DIR [--minutes 10] [--solo-minutes 2] [--max-steps 300]

One Ray for everything (all of this machine's cores). First a seed dataset of ``--seed-episodes``
expert episodes, then, one after the other:

- **trainer alone**: the live trainer actor (`drivelab.live.trainer_actor.LiveTrainer`) running
  its periods of ``refresh_every`` batches back to back over a copy of the seed dataset;
- **collector alone**: one collector actor driving with the trainer-alone run's policy (β = 0:
  the policy executes, the expert labels; the per-step work is the same for every β, since the
  policy observes every frame and the expert labels every frame);
- **live**: `drivelab live` (`run_live`) on another copy: one collector, the trainer, the
  player, for ``--minutes``.

Reported: frames collected per second, trainer samples per second (wall: every sample trained
over the wall time, period start-up included; and within the periods), the ratios live/solo
(goal ≥ 0.4 each), the player's score per version, and the hot-swap delay (checkpoint written ->
the player driving it: total, and after the player's current episode ended), median and max.
Everything goes to ``DIR/live_bench.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import time
from pathlib import Path

os.environ.setdefault("SDL_VIDEODRIVER", "dummy")

from drivelab.config import load_config
from drivelab.data.collect import CollectPlan, collect
from drivelab.live.collector import Collector, EpisodeOrder
from drivelab.live.ledger import read_ledger
from drivelab.live.runner import run_live
from drivelab.live.trainer_actor import LiveTrainer
from drivelab.live.weights import publish, read_version
from drivelab.runs.folder import RunFolder
from drivelab.sweep.engine import start_ray
from drivelab.sweep.resources import worker_env

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "carracing" / "pilotnet.yaml"


def bench_config(dataset: Path, args: argparse.Namespace, seconds: float):
    return load_config(CONFIG, [
        f"data.path={dataset}", "data.input_size=[64,64]", "data.val_split=null",
        f"train.batch_size={args.batch_size}", f"train.checkpoint_every={args.refresh_every}",
        "train.log_every=25", "train.val_every=100000", "train.warmup_batches=50",
        f"live.max_steps={args.max_steps}", f"live.refresh_every={args.refresh_every}",
        f"live.player.max_steps={args.max_steps}", "live.player.tracks=3", "live.beta.per=step",
        f"live.stop.seconds={seconds}", "live.collectors=1", "live.warmup_episodes=1"])


def options(cpus: float) -> dict:
    return {"num_cpus": cpus, "runtime_env": {"env_vars": worker_env(1)}}


def trainer_alone(args: argparse.Namespace, dataset: Path, out: Path) -> dict:
    import ray

    config = bench_config(dataset, args, args.solo_minutes * 60)
    trainer = ray.remote(LiveTrainer).options(**options(1)).remote(config, str(out / "solo_runs"), None, 1)
    ray.get(trainer.period.remote(args.refresh_every))  # start-up and the first period: not counted
    started, rows, batch = time.time(), [], args.refresh_every
    while time.time() - started < args.solo_minutes * 60:
        batch += args.refresh_every
        rows.append(ray.get(trainer.period.remote(batch)))
    wall = time.time() - started
    ray.kill(trainer)
    samples = sum((r["batch"] - r["first_batch"]) * args.batch_size for r in rows)
    return {"run": rows[-1]["run"], "wall_s": wall, "samples_per_s_wall": samples / wall,
            "samples_per_s_in_period": statistics.median(r["samples_per_s"] for r in rows),
            "periods": len(rows)}


def collector_alone(args: argparse.Namespace, dataset: Path, run: str) -> dict:
    import ray

    config = bench_config(dataset, args, args.solo_minutes * 60)
    collector = ray.remote(Collector).options(**options(1)).remote(str(dataset), config.live, 1)
    policy = publish(read_version(RunFolder.open(run), 1))
    ray.get(collector.pid.remote())
    started, frames, slot = time.time(), 0, 100
    while time.time() - started < args.solo_minutes * 60:
        row = ray.get(collector.collect.remote(EpisodeOrder(slot, 0.0, 1), policy))
        frames, slot = frames + row["length"], slot + 1
    wall = time.time() - started
    ray.kill(collector)
    return {"wall_s": wall, "frames": frames, "frames_per_s": frames / wall, "episodes": slot - 100}


def live_loop(args: argparse.Namespace, dataset: Path, out: Path) -> dict:
    summary = run_live(bench_config(dataset, args, args.minutes * 60), out / "live_runs", say=lambda _l: None,
                       append=True)  # a copy of the seed dataset
    rows = read_ledger(Path(summary["run"]))
    periods = [r for r in rows if r["kind"] == "period"]
    plays = [r for r in rows if r["kind"] == "play"]
    swaps = [p for p in plays if p.get("swapped")]
    if not periods or not plays:
        raise SystemExit(f"live: {len(periods)} training periods and {len(plays)} player episodes ended "
                         f"in {args.minutes} minutes: nothing to compare; raise --minutes")
    first = min(r["time"] for r in rows if r["kind"] == "episode")
    last = max(r["time"] for r in rows)
    wall = last - first
    samples = sum((r["batch"] - r["first_batch"]) * args.batch_size for r in periods)
    episodes = [r for r in rows if r["kind"] == "episode"]
    return {
        "summary": summary, "wall_s": wall,
        "frames_per_s": sum(r["length"] for r in episodes) / wall,
        "samples_per_s_wall": samples / wall,
        "samples_per_s_in_period": statistics.median(r["samples_per_s"] for r in periods),
        "periods": len(periods), "versions": len([r for r in rows if r["kind"] == "version"]),
        "player": [{"version": p["version"], "batch": p["batch"], "score": p.get("watch/score"),
                    "seed": p.get("watch/seed")} for p in plays],
        "hot_swap_s": [p["hot_swap_s"] for p in swaps],
        "hot_swap_after_episode_s": [p["hot_swap_after_episode_s"] for p in swaps],
        "waited_for_episode_s": [p["waited_for_episode_s"] for p in swaps],
        "policy_steps": sum(r["policy_steps"] for r in episodes), "frames": sum(r["length"] for r in episodes),
    }


def med_max(values: list[float]) -> str:
    return f"median {statistics.median(values):.3f} s, max {max(values):.3f} s" if values else "none"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--solo-minutes", type=float, default=2)
    parser.add_argument("--max-steps", type=int, default=300)
    parser.add_argument("--seed-episodes", type=int, default=3)
    parser.add_argument("--refresh-every", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=False)
    seed = args.out / "seed.zarr"
    collect(seed, CollectPlan(env="carracing", seed=0, max_steps=args.max_steps), episodes=args.seed_episodes,
            workers=1)
    start_ray(None, 1)
    load = {"before": os.getloadavg()}
    shutil.copytree(seed, args.out / "trainer.zarr")
    trainer = trainer_alone(args, args.out / "trainer.zarr", args.out)
    load["after_trainer"] = os.getloadavg()
    shutil.copytree(seed, args.out / "collector.zarr")
    collector = collector_alone(args, args.out / "collector.zarr", trainer["run"])
    load["after_collector"] = os.getloadavg()
    shutil.copytree(seed, args.out / "live.zarr")
    live = live_loop(args, args.out / "live.zarr", args.out)
    load["after_live"] = os.getloadavg()
    by_version: dict[int, list[float]] = {}
    for p in live["player"]:
        if isinstance(p["score"], int | float):
            by_version.setdefault(p["version"], []).append(p["score"])
    lines = [
        f"trainer alone: {trainer['samples_per_s_wall']:.1f} samples/s wall "
        f"({trainer['samples_per_s_in_period']:.1f} within periods), {trainer['periods']} periods",
        f"collector alone: {collector['frames_per_s']:.1f} frames/s ({collector['episodes']} episodes)",
        f"live ({live['wall_s']:.0f} s): collection {live['frames_per_s']:.1f} frames/s "
        f"= {live['frames_per_s'] / collector['frames_per_s']:.2f}x alone; trainer "
        f"{live['samples_per_s_wall']:.1f} samples/s wall = "
        f"{live['samples_per_s_wall'] / trainer['samples_per_s_wall']:.2f}x alone "
        f"({live['samples_per_s_in_period']:.1f} within periods = "
        f"{live['samples_per_s_in_period'] / trainer['samples_per_s_in_period']:.2f}x)",
        f"live: {live['periods']} periods, {live['versions']} versions, {len(live['player'])} player episodes, "
        f"{live['policy_steps']}/{live['frames']} collected steps executed by the policy",
        f"hot swap, checkpoint written -> driving it: {med_max(live['hot_swap_s'])}",
        f"hot swap after the current episode ended: {med_max(live['hot_swap_after_episode_s'])}",
        "player score per version: " + ", ".join(
            f"v{v} {statistics.fmean(s):.3f}" for v, s in sorted(by_version.items())),
        f"load averages: {load}",
    ]
    print("\n".join(lines))
    (args.out / "live_bench.json").write_text(json.dumps(
        {"args": {k: str(v) for k, v in vars(args).items()}, "trainer": trainer, "collector": collector,
         "live": live, "load": load, "lines": lines}, indent=1, default=str))


if __name__ == "__main__":
    main()
