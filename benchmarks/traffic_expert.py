"""The traffic expert on held-out scenarios, in drivelab's world and as highway-env ships it.

    python benchmarks/traffic_expert.py [--scenario roundabout] [--seeds 10000-10199]
        [--config drivelab|highway-env|highway-env+limit|all] [--workers 2] [--json out.json]

Issue 31 asks for the expert's figures "with drivelab's world configuration and, for reference,
highway-env's defaults". ``drivelab`` is the scenario as the verbs build it (5 decisions/s, the
scenario's duration and traffic). ``highway-env`` is the same adapter configured as highway-env
ships the env, as far as the adapter allows: its default duration (13 s intersection, 11 s
roundabout), 1 decision per second (``policy_frequency`` 1; the 15 Hz simulation is the same)
and its own spawn model (``traffic=highway-env``: 10 cars and p=0.6 per decision at the
intersection, the roundabout's four cars and none later). drivelab's fixes to the world
(routes, no reversing, right of way at the roundabout, towing of wrecks) stay: without them
the stock env has no arrival to measure. ``highway-env+limit`` keeps highway-env's decision
rate and traffic but drivelab's per-route time limit, to tell which difference costs what.

Prints one line per configuration: success, collisions per episode split by cause (the ego
drove into a car / a car drove into the stopped or slower ego, `drivelab.sim.infractions`),
timeouts, driving score (mean ± std), mean time to destination (successful episodes) and the
expert's act() time per decision (median and p99); ``--rows`` also prints every failure.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass

import numpy as np

from drivelab.evaluate.metrics import EpisodeTracker, finish_episode
from drivelab.sim import make_env, make_expert  # sets SDL_VIDEODRIVER=dummy on import
from drivelab.sim.infractions import Infraction

#: Option strings per configuration and scenario (see the module docstring).
CONFIGS: dict[str, dict[str, str]] = {
    "drivelab": {"intersection": "intersection", "roundabout": "roundabout"},
    "highway-env": {
        "intersection": "intersection:duration=13,decision_hz=1,traffic=highway-env",
        "roundabout": "roundabout:duration=11,decision_hz=1,traffic=highway-env",
    },
    # highway-env's decision rate and traffic with drivelab's per-route time limit: which of
    # the differences the reference's timeouts come from
    "highway-env+limit": {
        "intersection": "intersection:decision_hz=1,traffic=highway-env",
        "roundabout": "roundabout:decision_hz=1,traffic=highway-env",
    },
}


@dataclass(frozen=True)
class Row:
    seed: int
    exit: str
    outcome: str
    time_s: float
    score: float
    collisions_ego: int
    collisions_other: int
    act_ms: list[float]


def parse_seeds(text: str) -> list[int]:
    """``"10000-10199"``, ``"3,5,8-10"`` -> sorted unique seeds."""
    seeds: set[int] = set()
    for part in filter(None, (p.strip() for p in text.split(","))):
        lo, _, hi = part.partition("-")
        seeds.update(range(int(lo), int(hi or lo) + 1))
    if not seeds:
        raise argparse.ArgumentTypeError(f"no seeds in {text!r}")
    return sorted(seeds)


def run_episode(env_name: str, seed: int, frames: bool = False) -> Row:
    """One episode of the expert through the adapter.

    Without ``frames`` the world's rendering is replaced by a blank frame: the expert reads the
    simulator's state, never the picture, drawing is half of a step's time, and nothing in the
    simulation depends on it (the same outcomes either way, checked with ``--frames``)."""
    env = make_env(env_name)
    expert = make_expert(env)
    if not frames:
        blank = np.zeros(env.frame_shape, np.uint8)
        env.world.render = lambda: blank
    try:
        env.reset(seed=seed)
        expert.reset()
        tracker = EpisodeTracker(fps=env.fps)
        act_ms: list[float] = []
        while True:
            t0 = time.perf_counter()
            action = expert.act(env)
            act_ms.append(1e3 * (time.perf_counter() - t0))
            result = env.step(action)
            tracker.update(result.reward, result.info, float(env.ego.speed), result.infractions)
            if result.done:
                break
        row = finish_episode(seed, tracker, result.info, env.progress, result.outcome)
        kinds = tracker.infractions
        return Row(seed, env.command, str(row.outcome), round(env.steps / env.fps, 2), row.score,
                   kinds[Infraction.COLLISION], kinds[Infraction.STRUCK], act_ms)
    finally:
        env.close()


def summarise(rows: list[Row]) -> dict[str, float]:
    n = len(rows)
    outcomes = Counter(r.outcome for r in rows)
    scores = np.array([r.score for r in rows])
    ms = np.concatenate([r.act_ms for r in rows])
    done = [r.time_s for r in rows if r.outcome == "success"]
    return {
        "episodes": n,
        "success": outcomes["success"] / n,
        "collisions_ego": sum(r.collisions_ego for r in rows) / n,
        "collisions_other": sum(r.collisions_other for r in rows) / n,
        "timeouts": outcomes["timeout"] / n,
        "route_failures": outcomes["route_failure"] / n,
        "score_mean": float(scores.mean()),
        "score_std": float(scores.std()),
        "time_to_destination_s": float(np.mean(done)) if done else float("nan"),
        "act_ms_median": float(np.median(ms)),
        "act_ms_p99": float(np.percentile(ms, 99)),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", choices=("intersection", "roundabout", "both"),
                        default="both")
    parser.add_argument("--config", choices=(*CONFIGS, "all"), default="all")
    parser.add_argument("--seeds", type=parse_seeds, default=parse_seeds("10000-10199"))
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--extra", default="",
                        help="more scenario options for every configuration, e.g. duration=90")
    parser.add_argument("--rows", action="store_true", help="print every failed episode")
    parser.add_argument("--progress", action="store_true",
                        help="print each episode's row (JSON) to stderr as it finishes")
    parser.add_argument("--frames", action="store_true",
                        help="render every frame, as a recorder would (twice as slow)")
    parser.add_argument("--json", default=None, help="also write every episode here")
    args = parser.parse_args(argv)

    scenarios = ("intersection", "roundabout") if args.scenario == "both" else (args.scenario,)
    configs = tuple(CONFIGS) if args.config == "all" else (args.config,)
    out: dict[str, object] = {}
    print(f"{'scenario':<13} {'config':<12} {'n':>4} {'success':>8} {'coll ego':>8} "
          f"{'coll other':>10} {'timeouts':>8} {'score':>13} {'time s':>7} {'ms/dec':>7} "
          f"{'p99':>5}")
    for scenario in scenarios:
        for config in configs:
            name = CONFIGS[config][scenario]
            if args.extra:
                name += ("," if ":" in name else ":") + args.extra
            start = time.perf_counter()
            with ProcessPoolExecutor(max_workers=max(1, args.workers)) as pool:
                rows = []
                for row in pool.map(run_episode, [name] * len(args.seeds), args.seeds,
                                    [args.frames] * len(args.seeds)):
                    rows.append(row)
                    if args.progress:  # one line per episode: a cut run still has its rows
                        print(json.dumps({k: v for k, v in asdict(row).items() if k != "act_ms"}),
                              file=sys.stderr, flush=True)
            s = summarise(rows)
            print(f"{scenario:<13} {config:<12} {s['episodes']:>4} {s['success']:>8.1%} "
                  f"{s['collisions_ego']:>8.3f} {s['collisions_other']:>10.3f} "
                  f"{s['timeouts']:>8.3f} {s['score_mean']:>6.3f} ± {s['score_std']:.3f} "
                  f"{s['time_to_destination_s']:>7.1f} {s['act_ms_median']:>7.2f} "
                  f"{s['act_ms_p99']:>5.1f}   ({time.perf_counter() - start:.0f} s wall)",
                  flush=True)
            if args.rows:
                for r in rows:
                    if r.outcome != "success":
                        print(f"    seed {r.seed} {r.exit}: {r.outcome} at {r.time_s} s "
                              f"(ego {r.collisions_ego}, other {r.collisions_other})")
            out[f"{scenario}/{config}"] = {
                "env": name, "summary": s,
                "rows": [{k: v for k, v in asdict(r).items() if k != "act_ms"} for r in rows]}
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(out, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
