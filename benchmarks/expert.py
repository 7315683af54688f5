"""Benchmark the CarRacing expert on a fixed range of track seeds through the real env.

    python benchmarks/expert.py [--seeds 0-19] [--workers 2] [--json out.json]

Prints one row per seed (reward, steps, off-track steps, unstuck count, tiles) and the summary
the project quotes: mean / std / min reward, env+expert steps per second and the expert's own
act() time per step. The seed range is part of the result: 0-19 is the reference set.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass

import numpy as np

from drivelab.sim import CarRacingEnv, make_expert  # sets SDL_VIDEODRIVER=dummy on import

DEFAULT_SEEDS = "0-19"


@dataclass(frozen=True)
class EpisodeResult:
    seed: int
    reward: float
    steps: int
    off_track_steps: int
    unstuck: int
    tiles: int
    track_tiles: int
    lap_complete: bool
    wall_s: float
    act_s: float


def parse_seeds(text: str) -> list[int]:
    """``"0-19"``, ``"3,5,8-10"`` -> sorted unique seeds."""
    seeds: set[int] = set()
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        if "-" in part:
            lo, hi = (int(x) for x in part.split("-", 1))
            if hi < lo:
                raise argparse.ArgumentTypeError(f"empty seed range {part!r}")
            seeds.update(range(lo, hi + 1))
        else:
            seeds.add(int(part))
    if not seeds:
        raise argparse.ArgumentTypeError(f"no seeds in {text!r}")
    return sorted(seeds)


def run_episode(seed: int, max_steps: int = 1000) -> EpisodeResult:
    """One full episode of the expert on track ``seed`` (real rendering, default env)."""
    env = CarRacingEnv(max_steps=max_steps)
    expert = make_expert(env)
    try:
        start = time.perf_counter()
        env.reset(seed=seed)
        expert.reset()
        total, off, act_s = 0.0, 0, 0.0
        while True:
            t0 = time.perf_counter()
            action = expert.act(env)
            act_s += time.perf_counter() - t0
            result = env.step(action)
            total += result.reward
            off += int(result.info["off_track"])
            if result.done:
                break
        info = result.info
        return EpisodeResult(
            seed=seed,
            reward=round(total, 2),
            steps=int(info["steps"]),
            off_track_steps=off,
            unstuck=int(info["unstuck_count"]),
            tiles=int(info["tiles_visited"]),
            track_tiles=int(info["track_tiles"]),
            lap_complete=bool(info["lap_complete"]),
            wall_s=time.perf_counter() - start,
            act_s=act_s,
        )
    finally:
        env.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=parse_seeds, default=parse_seeds(DEFAULT_SEEDS))
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--max-steps", type=int, default=1000)
    parser.add_argument("--json", default=None, help="also write per-seed results here")
    args = parser.parse_args(argv)

    start = time.perf_counter()
    workers = max(1, args.workers)
    if workers == 1:
        results = [run_episode(s, args.max_steps) for s in args.seeds]
    else:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            results = list(pool.map(run_episode, args.seeds, [args.max_steps] * len(args.seeds)))
    elapsed = time.perf_counter() - start

    print(f"{'seed':>5} {'reward':>8} {'steps':>6} {'off':>5} {'unstuck':>7} {'tiles':>9} lap")
    for r in results:
        tiles = f"{r.tiles}/{r.track_tiles}"
        print(
            f"{r.seed:>5} {r.reward:>8.1f} {r.steps:>6} {r.off_track_steps:>5} "
            f"{r.unstuck:>7} {tiles:>9} {'yes' if r.lap_complete else 'no'}"
        )
    rewards = np.array([r.reward for r in results])
    steps = sum(r.steps for r in results)
    episode_wall = sum(r.wall_s for r in results)
    act_us = 1e6 * sum(r.act_s for r in results) / max(steps, 1)
    print(
        f"\nseeds {args.seeds[0]}..{args.seeds[-1]} ({len(results)}): reward mean "
        f"{rewards.mean():.1f}  std {rewards.std():.1f}  min {rewards.min():.1f}  "
        f"max {rewards.max():.1f}"
    )
    print(
        f"off-track steps {sum(r.off_track_steps for r in results)}, unstuck "
        f"{sum(r.unstuck for r in results)}, laps complete "
        f"{sum(r.lap_complete for r in results)}/{len(results)}"
    )
    print(
        f"env+expert {steps / episode_wall:.0f} steps/s per worker, {steps / elapsed:.0f} "
        f"steps/s total with {workers} worker(s); expert act() {act_us:.0f} us/step"
    )
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump([asdict(r) for r in results], fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
