"""Collection throughput: worker scaling and recorder overhead.

    python benchmarks/collect.py [--episodes 4] [--max-steps 500] [--repeats 3] [--profile]

1. frames/s of `collect` with 1 and with 2 workers on the same episodes, and the ratio (goal on a
   2-core machine: >= 1.8x). Includes process start-up, as a user sees it.
2. recorder overhead: the same expert episodes driven in this process with a bare loop (env step +
   expert, nothing kept) vs `drive_episode` + `write_episode` (record, compress, commit to Zarr).
   Goal: <= 10 %. Medians over repeats; the machine is noisy.
3. the road renderer: bare stepping with gymnasium's own ``_render_road`` vs drivelab's
   (`drivelab.sim.carracing_render`, same frames), alternated, medians.
4. contention: bare stepping in one process alone vs in two processes at once (per-process
   steps/s, alternated, medians). Two workers can collect at most 2 / slowdown x one: the part
   of the 2-worker ratio that no scheduling of episodes can win back.
5. ``--profile``: where a recorded step's time goes (cProfile over one recorded and committed
   episode): the road drawing, the rest of rendering, Box2D physics, the expert, the Zarr write.
"""

from __future__ import annotations

import argparse
import cProfile
import multiprocessing
import os
import pstats
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


def timed_stepping(steps: int) -> float:
    """Seconds for ``steps`` bare env + expert steps in a fresh process (after 20 to warm up)."""
    env = make_env("carracing", max_steps=10 * steps)
    expert = make_expert(env)
    env.reset(seed=3)
    expert.reset()
    for _ in range(20):
        env.step(np.asarray(expert.act(env), np.float32))
    started = time.perf_counter()
    for _ in range(steps):
        if env.step(np.asarray(expert.act(env), np.float32)).done:
            env.reset(seed=4)
            expert.reset()
    seconds = time.perf_counter() - started
    env.close()
    return seconds


def contention(steps: int, repeats: int) -> float:
    """Per-process slowdown of stepping when two processes step at once (1.0: none)."""
    ratios = []
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        for _ in range(repeats):
            alone = pool.apply(timed_stepping, (steps,))
            pair = pool.map(timed_stepping, [steps, steps])
            ratios.append(statistics.mean(pair) / alone)
    return statistics.median(ratios)


def stock_renderer(env) -> None:
    """Give ``env`` back gymnasium's own road renderer (drivelab's is an instance attribute)."""
    env._core.__dict__.pop("_render_road", None)


def profile_recorded_step(plan: CollectPlan, store) -> None:
    """Shares of one recorded, committed episode's time, from cProfile's cumulative times."""
    env = make_env(plan.env, max_steps=plan.max_steps)
    expert = make_expert(env)
    profiler = cProfile.Profile()
    profiler.enable()
    record = drive_episode(env, plan, 7, expert)
    write_episode(store, 999, record)
    profiler.disable()
    env.close()
    stats = pstats.Stats(profiler).stats  # (file, line, name) -> (cc, nc, tt, ct, callers)
    def cumulative(*names: str) -> float:
        return sum(v[3] for k, v in stats.items() if any(k[2] == n or k[2].endswith(f".{n}>") for n in names))
    total = cumulative("drive_episode") + cumulative("write_episode")
    road = cumulative("fast_render_road", "_render_road")
    render = cumulative("_render")
    parts = {"road drawing": road, "rest of rendering": render - road,
             "Box2D physics (b2World_Step)": cumulative("b2World_Step"), "expert": cumulative("act"),
             "Zarr write + commit": cumulative("write_episode")}
    print(f"profile of one recorded episode ({len(record)} steps, {total / len(record) * 1e3:.2f} ms a step):")
    for name, seconds in parts.items():
        print(f"  {name:30s} {seconds / total:6.1%}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--episodes", type=int, default=4)
    ap.add_argument("--max-steps", type=int, default=500)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--profile", action="store_true", help="Where a recorded step's time goes.")
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

        # ---- the road renderer: gymnasium's vs drivelab's (same frames), alternated
        per_step: dict[str, list[float]] = {"stock": [], "fast": []}
        for r in range(args.repeats):
            for name in ("stock", "fast"):
                env = make_env(plan.env, max_steps=plan.max_steps)
                if name == "stock":
                    stock_renderer(env)
                expert = make_expert(env)
                t0 = time.perf_counter()
                steps = bare_episode(env, expert, plan, r)
                per_step[name].append((time.perf_counter() - t0) / steps)
                env.close()
        stock, fast = (statistics.median(per_step[k]) for k in ("stock", "fast"))
        print(f"bare stepping, gymnasium's road renderer: {1 / stock:8.1f} steps/s")
        print(f"bare stepping, drivelab's road renderer : {1 / fast:8.1f} steps/s  ({stock / fast:.2f}x)")
        if args.profile:
            profile_recorded_step(plan, store)

        # ---- worker scaling, through the real `collect`
        rates: dict[int, list[float]] = {1: [], 2: []}
        for r in range(args.repeats):
            for workers in (1, 2):
                out = Path(tmp) / f"w{workers}-{r}.zarr"
                s = collect(out, plan, episodes=args.episodes, workers=workers)
                rates[workers].append(s.frames_per_s)
        slowdown = contention(1500, args.repeats)
        one, two = statistics.median(rates[1]), statistics.median(rates[2])
        print(f"collect, 1 worker        : {one:8.1f} frames/s (median of {args.repeats}; "
              f"{args.episodes} episodes x <= {args.max_steps} steps)")
        print(f"collect, 2 workers       : {two:8.1f} frames/s")
        print(f"2-worker speed-up        : {two / one:.2f}x   (goal >= 1.8x on {os.cpu_count()} cores)")
        print(f"stepping, 2 processes at once: each {slowdown:.3f}x as slow as alone -> ceiling "
              f"{2 / slowdown:.2f}x for 2 workers")


if __name__ == "__main__":
    main()
