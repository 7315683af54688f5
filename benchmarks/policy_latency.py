"""Policy latency at batch 1 on CPU: what one driving step costs the default policy.

    python benchmarks/policy_latency.py [--config configs/carracing/pilotnet.yaml] [--steps 2000]

Times `PolicyRuntime.act` (frame stack + history buffers, input pipeline, forward, head ->
action) on real CarRacing observations, with randomly initialised weights (latency does not
depend on their values). Reports p50 / p99 / mean in ms (goal: p99 <= 5 ms) and predictions/s,
next to the bare `policy(frames, history)` forward as the baseline, measured in the same process,
for fp32 and for bf16 autocast (`eval --precision bf16`; marked "emulated" on a CPU without
AMX / AVX-512 BF16, where `--precision auto` stays in fp32 for that reason).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import numpy as np
import torch

os.environ.setdefault("SDL_VIDEODRIVER", "dummy")

from drivelab.config import load_config
from drivelab.evaluate.runtime import PolicyRuntime
from drivelab.models import build_policy
from drivelab.precision import bf16_support
from drivelab.processor.state import ProcessorState
from drivelab.sim import make_env, make_expert

REPO = Path(__file__).resolve().parents[1]


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", type=Path, default=REPO / "configs/carracing/pilotnet.yaml")
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    config = load_config(args.config)
    env = make_env("carracing", max_steps=args.steps)
    sizes = {s.name: s.size for s in env.telemetry_specs}
    history = config.model.history
    facts = {
        "frame_shape": list(env.frame_shape),
        "history_sizes": {s: sizes[s] for s in history.signals} if history else {},
        "frame_mean": [0.35, 0.63, 0.35], "frame_std": [0.14, 0.29, 0.14],
    }
    torch.manual_seed(0)
    weights = build_policy(config.model, config.frame_shape, facts["history_sizes"] or None).state_dict()
    expert = make_expert(env)
    # record real observations first, so env stepping is not part of the timing
    obs = env.reset(seed=1)
    observations = []
    for _ in range(args.steps):
        observations.append(obs)
        result = env.step(expert.act(env))
        obs = result.observation
        if result.done:
            obs = env.reset(seed=len(observations))
    env.close()
    native, why = bf16_support("cpu")
    print(f"policy {config.line}, batch 1, {args.threads} CPU thread(s), {len(observations)} steps; {why}")
    for precision in ("32", "bf16"):
        runtime = PolicyRuntime(config, ProcessorState.from_run_facts(config, facts), weights, label="random-init")
        runtime.precision = precision  # measured as asked, even where auto would not pick it
        runtime.reset()
        for o in observations[:50]:
            runtime.act(o)  # warm-up
        runtime.latencies_s.clear()
        for o in observations:
            runtime.act(o)
        lat = [s * 1e3 for s in runtime.latencies_s]
        # baseline: the bare forward on a prepared batch
        batch = runtime.observe(observations[0])
        frames, hist = runtime.pipeline(batch)
        bare = []
        with torch.inference_mode(), torch.autocast("cpu", torch.bfloat16, enabled=precision == "bf16"):
            for _ in range(len(observations)):
                t0 = time.perf_counter()
                runtime.policy(frames, hist)
                bare.append((time.perf_counter() - t0) * 1e3)
        label = "fp32" if precision == "32" else ("bf16" if native else "bf16 (emulated)")
        print(f"{label:16s} act(): p50 {percentile(lat, 50):.2f} ms  p99 {percentile(lat, 99):.2f} ms  "
              f"mean {statistics.mean(lat):.2f} ms -> {1e3 / statistics.mean(lat):.0f} predictions/s; "
              f"bare forward p50 {percentile(bare, 50):.2f} ms; runtime/bare "
              f"{percentile(lat, 50) / percentile(bare, 50):.2f}x; goal p99 <= 5 ms: "
              f"{'met' if percentile(lat, 99) <= 5 else 'NOT met'}")

if __name__ == "__main__":
    main()
