"""Batch-1 CPU latency: the onnx engine against the torch runtime, one thread, same frames.

    python benchmarks/export_latency.py RUN[@BATCH] [--runs runs] [--steps 2000] [--onnx FILE]

Both engines are timed through ``act`` (what a driving step costs: frame stack + history window
on the host, then the policy with its input pipeline and action mapping), on the same recorded
CarRacing observations (the expert drives, so env stepping is not timed), in one process, one
intra-op thread each (`torch.set_num_threads(1)`; onnxruntime ``intra_op_num_threads=1``). The
two alternate in blocks of 100 steps so a noisy neighbour on a shared machine slows both alike.
The run is exported first (parity checked) unless ``--onnx`` names an export of it. Reports p50
and p99 per engine, the ratio of the p50s (goal: onnx <= 0.7x torch) and the largest difference
between the two engines' actions on the same observations.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import numpy as np
import torch

os.environ.setdefault("SDL_VIDEODRIVER", "dummy")

from drivelab.evaluate.runtime import PolicyDriver, PolicyRuntime
from drivelab.export import ExportRequest, OnnxRuntime, export_run
from drivelab.sim import make_env, make_expert

BLOCK = 100
GOAL = 0.7


def record(env: object, steps: int) -> list:
    """Observations of the expert driving track seeds 10000, 10001, ... (held out)."""
    expert = make_expert(env)
    seed = 10000
    obs, observations = env.reset(seed=seed), []
    while len(observations) < steps:
        observations.append(obs)
        result = env.step(expert.act(env))
        obs = result.observation
        if result.done:
            seed += 1
            obs = env.reset(seed=seed)
            expert.reset()
    return observations


def timed(drivers: dict[str, PolicyDriver], env: object, observations: list) -> tuple[dict[str, list[float]], float]:
    """Each engine's act() latencies (ms) over ``observations``, alternating in blocks, and the
    largest difference between the actions the two drivers send to the env (clipped to its
    ranges) for the same observations."""
    actions: dict[str, list[np.ndarray]] = {name: [] for name in drivers}
    for driver in drivers.values():
        driver.reset(0)
        for o in observations[:50]:
            driver.act(o, env)  # warm-up
        driver.reset(0)
        driver.runtime.latencies_s.clear()
    for start in range(0, len(observations), BLOCK):
        for name, driver in drivers.items():
            actions[name] += [driver.act(o, env) for o in observations[start:start + BLOCK]]
    first, second = (np.stack(a) for a in actions.values())
    latencies = {name: [s * 1e3 for s in d.runtime.latencies_s] for name, d in drivers.items()}
    return latencies, float(np.abs(first - second).max())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", help="RUN[@BATCH]")
    ap.add_argument("--runs", type=Path, default=Path("runs"))
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--onnx", type=Path, default=None, help="an export of RUN (default: export now)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    env = make_env("carracing", max_steps=args.steps)
    with tempfile.TemporaryDirectory() as scratch:
        path = args.onnx
        if path is None:
            path = export_run(ExportRequest(args.run, args.runs, out=Path(scratch) / "policy.onnx")).path
        drivers = {"torch": PolicyDriver(PolicyRuntime.from_ref(args.run, args.runs), env),
                   "onnx": PolicyDriver(OnnxRuntime.from_file(path), env)}
        observations = record(env, args.steps)
        latencies, worst = timed(drivers, env, observations)
    env.close()
    p50 = {k: float(np.percentile(v, 50)) for k, v in latencies.items()}
    print(f"{drivers['torch'].name}, batch 1, 1 CPU thread, {len(observations)} steps per engine "
          f"(torch {torch.__version__.split('+')[0]}, onnxruntime {_ort_version()})")
    for name, values in latencies.items():
        print(f"{name:6s} act(): p50 {p50[name]:.3f} ms  p99 {np.percentile(values, 99):.3f} ms  "
              f"mean {np.mean(values):.3f} ms")
    print(f"actions sent to the env for the same observations: max |onnx - torch| {worst:.2e}")
    ratio = p50["onnx"] / p50["torch"]
    print(f"onnx / torch p50: {ratio:.2f}x (goal <= {GOAL}x: {'met' if ratio <= GOAL else 'NOT met'})")


def _ort_version() -> str:
    import onnxruntime

    return onnxruntime.__version__


if __name__ == "__main__":
    main()
