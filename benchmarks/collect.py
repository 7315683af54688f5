"""Collection throughput: worker scaling and recorder overhead.

    python benchmarks/collect.py [--episodes 4] [--max-steps 500] [--repeats 3]

1. frames/s of `collect` with 1 and with 2 workers on the same episodes, and the ratio (goal on a
   2-core machine: >= 1.7x). Includes process start-up, as a user sees it.
2. recorder overhead: the same expert episodes driven in this process with a bare loop (env step +
   expert, nothing kept) vs `drive_episode` + `write_episode` (record, compress, commit to Zarr).
   Goal: <= 10 %. Medians over repeats; the machine is noisy.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("SDL_VIDEODRIVER", "dummy")

from drivelab.data.collect import (
    CollectPlan,
    collect,
    drive_episode,
    open_for_collection,
    track_seed,
)
from drivelab.data.episode_writer import write_episode
from drivelab.sim import make_env, make_expert


def bare_episode(env, expert, plan: CollectPlan, index: int) -> int:
    """The baseline: drive the same episode, keep nothing."""
    env.reset(seed=track_seed(plan, index))
    expert.reset()
    steps = 0
    for _ in range(plan.max_steps):
        result = env.step(np.asarray(expert.act(env), np.float32))
        steps += 1
        if result.done:
            break
    return steps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--episodes", type=int, default=4)
    ap.add_argument("--max-steps", type=int, default=500)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    plan = CollectPlan(env="carracing", seed=100, noise=0.0, max_steps=args.max_steps)

    with tempfile.TemporaryDirectory() as tmp:
        # ---- recorder overhead, in this process
        env = make_env(plan.env, max_steps=plan.max_steps)
        expert = make_expert(env)
        store = open_for_collection(Path(tmp) / "overhead.zarr", env, append=False, chunk_frames=32)
        bare_t, rec_t, write_t = [], [], []
        index = 0
        for _ in range(args.repeats):
            for i in range(2):
                t0 = time.perf_counter()
                n_bare = bare_episode(env, expert, plan, i)
                t1 = time.perf_counter()
                record = drive_episode(env, plan, i, expert)
                t2 = time.perf_counter()
                write_episode(store, index, record)
                t3 = time.perf_counter()
                index += 1
                assert len(record) == n_bare, "recording changed the episode"
                bare_t.append((t1 - t0) / n_bare)
                rec_t.append((t3 - t1) / n_bare)
                write_t.append((t3 - t2) / n_bare)
        env.close()
        bare, rec, write = (statistics.median(x) for x in (bare_t, rec_t, write_t))
        print(f"bare env+expert stepping : {1 / bare:8.1f} steps/s (median of {len(bare_t)})")
        print(f"recorded + committed     : {1 / rec:8.1f} steps/s  (of which Zarr write "
              f"{write / rec:.1%})")
        print(f"recorder overhead        : {rec / bare - 1:+.1%}   (goal <= +10%)")

        # ---- worker scaling, through the real `collect`
        rates: dict[int, list[float]] = {1: [], 2: []}
        for r in range(args.repeats):
            for workers in (1, 2):
                out = Path(tmp) / f"w{workers}-{r}.zarr"
                s = collect(out, plan, episodes=args.episodes, workers=workers)
                rates[workers].append(s.frames_per_s)
        one, two = statistics.median(rates[1]), statistics.median(rates[2])
        print(f"collect, 1 worker        : {one:8.1f} frames/s (median of {args.repeats}; "
              f"{args.episodes} episodes x <= {args.max_steps} steps)")
        print(f"collect, 2 workers       : {two:8.1f} frames/s")
        print(f"2-worker speed-up        : {two / one:.2f}x   (goal >= 1.7x on {os.cpu_count()} cores)")


if __name__ == "__main__":
    main()
