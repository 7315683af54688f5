"""Traffic world speed: bare highway-env vs drivelab's adapter, the expert, and collection.

    python benchmarks/traffic_world.py [--scenario intersection] [--steps 300] [--rounds 3]
        [--collect-episodes 4] [--profile]

Issue 31, item 5 and its collection goals. In the same sitting, interleaved round by round (the
machine is shared and noisy: medians over rounds):

* env steps/s (decisions at 5 Hz, 15 Hz simulation, 96x96 rgb frames) of
  - **bare**: highway-env's own env class with the same continuous actions, decision rate and
    render settings (its viewer switched on: under ``SDL_VIDEODRIVER=dummy`` it draws nothing
    otherwise); the roundabout's own class crashes in reset() with continuous actions, so its
    bare env overrides only the reward that crashes;
  - **adapter**: `drivelab.sim.traffic.TrafficEnv` (frame, telemetry, infractions);
  - **adapter + expert**: the same with `TrafficExpert.act()` before each step;
  with 1 and 2 worker processes (steps/s per worker). Only step() (and act()) is timed:
  resets are excluded, since the envs end episodes at different times (bare and adapter get
  the same fixed "drive on" action; the adapter's episode may end on a wrong exit, the bare
  one's only on a crash or timeout).
* the expert's act() time per decision (median, ms);
* collection frames/s: the adapter + recorder + Zarr write with a fixed action (no expert), the
  same with the expert, and the ``collect`` verb's own figure with 1 and 2 workers (process
  start-up included, as a user sees it), each as a ratio to bare stepping with frames.
  Goals: adapter + recorder >= 0.8x bare, expert included >= 0.5x bare.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import platform
import pstats
import statistics
import subprocess
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

os.environ.setdefault("SDL_VIDEODRIVER", "dummy")

import numpy as np

from drivelab.data.collect import CollectPlan, collect, drive_episode, open_for_collection
from drivelab.data.episode_writer import write_episode
from drivelab.sim import make_env, make_expert
from drivelab.sim.traffic import ACCEL_RANGE, SIM_HZ, STEER_RANGE

DECISION_HZ = 5
FRAME, VIEW = 96, 50.0
#: The action bare and adapter get when no expert drives: straight on, no acceleration.
DRIVE_ON = np.array([0.0, 0.0], np.float32)  # drivelab order: steering, accel_brake


class DriveOn:
    """A stand-in "expert" for the recorder without the planner: always ``DRIVE_ON``."""

    def reset(self) -> None:
        pass

    def act(self, env: Any) -> np.ndarray:
        return DRIVE_ON


def bare_env(scenario: str) -> Any:
    """highway-env's own class, configured like the adapter's world where the config allows."""
    from highway_env.envs.common.graphics import EnvViewer
    from highway_env.envs.intersection_env import IntersectionEnv
    from highway_env.envs.roundabout_env import RoundaboutEnv

    class Roundabout(RoundaboutEnv):
        def _rewards(self, action: Any) -> dict[str, float]:  # the stock one crashes (array)
            return {"collision_reward": float(self.vehicle.crashed), "high_speed_reward": 0.0,
                    "lane_change_reward": 0.0, "on_road_reward": float(self.vehicle.on_road)}

    config = {
        "action": {"type": "ContinuousAction", "steering_range": [-STEER_RANGE, STEER_RANGE],
                   "acceleration_range": [-ACCEL_RANGE, ACCEL_RANGE]},
        "policy_frequency": DECISION_HZ, "simulation_frequency": SIM_HZ,
        "duration": 30, "screen_width": FRAME, "screen_height": FRAME,
        "scaling": FRAME / VIEW, "centering_position": [0.5, 0.5], "offscreen_rendering": True,
    }
    if scenario == "intersection":
        config["spawn_probability"] = 0.6 / DECISION_HZ  # the adapter's rate per second
    cls = IntersectionEnv if scenario == "intersection" else Roundabout
    env = cls(config=config, render_mode="rgb_array")
    env.viewer = EnvViewer(env)
    env.viewer.enabled = True  # disabled under SDL_VIDEODRIVER=dummy: it would draw nothing
    return env


def step_rate(kind: str, scenario: str, steps: int, seed: int) -> tuple[float, list[float]]:
    """(env steps/s over ``steps`` timed steps, expert act() times in ms)."""
    bare = kind == "bare"
    env = bare_env(scenario) if bare else make_env(scenario)
    expert = make_expert(env) if kind == "expert" else None
    busy, act_ms, done, episode = 0.0, [], True, 0
    try:
        for _ in range(steps):
            if done:
                if bare:
                    env.reset(seed=seed + episode)
                    env.render()
                else:
                    env.reset(seed=seed + episode)
                if expert is not None:
                    expert.reset()
                episode += 1
            t0 = time.perf_counter()
            if expert is not None:
                action = expert.act(env)
                act_ms.append(1e3 * (time.perf_counter() - t0))
            else:
                action = DRIVE_ON
            if bare:
                _, _, term, trunc, _ = env.step(np.array([action[1], action[0]], np.float32))
                env.render()
                done = term or trunc
            else:
                done = env.step(action).done
            busy += time.perf_counter() - t0
        return steps / busy, act_ms
    finally:
        env.close()


def _rate_only(args: tuple[str, str, int, int]) -> float:
    return step_rate(*args)[0]


def recorded_rate(scenario: str, episodes: int, with_expert: bool, tmp: Path, tag: str) -> float:
    """frames/s of adapter + recorder + Zarr write, in this process (resets included)."""
    plan = CollectPlan(env=scenario, seed=10000, noise=0.0, max_steps=200)
    env = make_env(scenario, max_steps=plan.max_steps)
    driver = make_expert(env) if with_expert else DriveOn()
    store = open_for_collection(tmp / f"{tag}.zarr", env, append=False, chunk_frames=32)
    frames, t0 = 0, time.perf_counter()
    for i in range(episodes):
        record = drive_episode(env, plan, i, driver)
        write_episode(store, i, record)
        frames += len(record)
    env.close()
    return frames / (time.perf_counter() - t0)


def cpu_name() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        for line in out.splitlines():
            if line.startswith("Model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scenario", choices=("intersection", "roundabout"), default="intersection")
    ap.add_argument("--steps", type=int, default=300, help="timed env steps per measurement")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--collect-episodes", type=int, default=4)
    ap.add_argument("--profile", action="store_true",
                    help="cProfile adapter + expert stepping and print the top functions")
    args = ap.parse_args()
    sc, n = args.scenario, args.steps
    if args.profile:
        prof = cProfile.Profile()
        prof.runcall(step_rate, "expert", sc, n, 10000)
        pstats.Stats(prof).sort_stats("cumulative").print_stats(25)
        return

    kinds = ("bare", "adapter", "expert")
    one: dict[str, list[float]] = {k: [] for k in kinds}
    two: dict[str, list[float]] = {k: [] for k in kinds}
    rec: dict[str, list[float]] = {"recorder": [], "recorder + expert": [],
                                   "collect 1 worker": [], "collect 2 workers": []}
    act: list[float] = []
    with tempfile.TemporaryDirectory() as tmp_name, ProcessPoolExecutor(2) as pool:
        tmp = Path(tmp_name)
        for r in range(args.rounds):
            seed = 10000 + 100 * r
            for k in kinds:  # interleaved: every kind once per round
                rate, ms = step_rate(k, sc, n, seed)
                one[k].append(rate)
                act += ms
                rates = list(pool.map(_rate_only, [(k, sc, n, seed), (k, sc, n, seed + 50)]))
                two[k].append(statistics.mean(rates))
            e = args.collect_episodes
            rec["recorder"].append(recorded_rate(sc, e, False, tmp, f"rec{r}"))
            rec["recorder + expert"].append(recorded_rate(sc, e, True, tmp, f"exp{r}"))
            for w in (1, 2):
                plan = CollectPlan(env=sc, seed=10000 + 100 * r, noise=0.0, max_steps=200)
                summary = collect(tmp / f"collect{w}-{r}.zarr", plan, episodes=e * w, workers=w)
                rec[f"collect {w} worker{'s' * (w > 1)}"].append(summary.frames_per_s / w)
            print(f"round {r + 1}/{args.rounds} done", flush=True)

    med = {k: statistics.median(v) for k, v in one.items()}
    bare = med["bare"]
    print(f"\n{sc}: {cpu_name()}, {os.cpu_count()} cores (shared), medians of {args.rounds} "
          f"interleaved rounds, {n} timed steps each, {DECISION_HZ} decisions/s, "
          f"{FRAME}x{FRAME} frames")
    print(f"{'env steps/s':<28} {'1 worker':>9} {'2 workers (each)':>17} {'x bare':>7}")
    labels = {"bare": "bare highway-env + frame", "adapter": "drivelab adapter",
              "expert": "adapter + expert"}
    for k in kinds:
        m1, m2 = med[k], statistics.median(two[k])
        print(f"{labels[k]:<28} {m1:>9.1f} {m2:>17.1f} {m1 / bare:>7.2f}")
    print(f"expert act(): median {np.median(act):.2f} ms, p99 {np.percentile(act, 99):.1f} ms "
          f"per decision ({len(act)} decisions)")
    print(f"\n{'collection frames/s (per worker)':<34} {'median':>7} {'x bare':>7}  goal")
    goals = {"recorder": ">= 0.8", "recorder + expert": ">= 0.5",
             "collect 1 worker": ">= 0.5", "collect 2 workers": ">= 0.5"}
    for k, v in rec.items():
        m = statistics.median(v)
        print(f"{k:<34} {m:>7.1f} {m / bare:>7.2f}  {goals[k]}")


if __name__ == "__main__":
    main()
