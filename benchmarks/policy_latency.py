"""Policy latency at batch 1 on CPU: what one driving step costs the default policy.

    python benchmarks/policy_latency.py [--config configs/carracing/pilotnet.yaml] [--steps 2000]
    python benchmarks/policy_latency.py --kinds [--steps 1000]

Times `PolicyRuntime.act` (frame stack + history buffers, input pipeline, forward, head ->
action) on real CarRacing observations, with randomly initialised weights (latency does not
depend on their values). Reports p50 / p99 / mean in ms (goal: p99 <= 5 ms) and predictions/s,
next to the bare `policy(frames, history)` forward as the baseline, measured in the same process,
for fp32 and for bf16 autocast (`eval --precision bf16`; marked "emulated" on a CPU without
AMX / AVX-512 BF16, where `--precision auto` stays in fp32 for that reason).

``--kinds``: one row per policy kind (`KINDS`: the config's frame policy, an LSTM, the temporal
transformer at K = 4 and 8), the same backbone, history and heads, batch 1, fp32, one step at a
time with the kind's state carried: torch ``act()`` (host buffers included), then the exported
graph's step (input pipeline, policy, action mapping; `export.graph.DeployedPolicy`) in torch
and in onnxruntime on the same inputs (exported with random weights, not parity-checked: latency
does not depend on the values), each kind's p50 against the frame policy's, in the same sitting;
the rows and engines alternate in blocks of `BLOCK` steps, so a noisy neighbour slows all alike.
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
from drivelab.export.engine import make_session
from drivelab.export.graph import DeployedPolicy, action_infos, example_inputs
from drivelab.export.metadata import FRAMES, HISTORY, LAST_ACTION, STATE
from drivelab.export.writer import to_onnx
from drivelab.models import build_policy
from drivelab.precision import bf16_support
from drivelab.processor.state import ProcessorState
from drivelab.sim import make_env, make_expert

REPO = Path(__file__).resolve().parents[1]

#: ``--kinds``: overrides of the config per row (the first row is the baseline of the ratios).
SEQUENCES = "train.bptt.mode=window"
BLOCK, WARMUP = 100, 50  # steps per alternating block; first steps of each engine not counted
KINDS = {
    "stateless": [],
    "lstm 2x64": ["model.kind=lstm", "model.recurrent={layers: 2, hidden: 64}", SEQUENCES],
    "transformer K=4": ["model.kind=transformer", "model.transformer={window: 4}", SEQUENCES],
    "transformer K=8": ["model.kind=transformer", "model.transformer={window: 8}", SEQUENCES],
}


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", type=Path, default=REPO / "configs/carracing/pilotnet.yaml")
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    ap.add_argument("--kinds", action="store_true", help="one row per policy kind, torch and onnxruntime")
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
    if args.kinds:
        kind_rows(args, observations, facts)
        return
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


class KindRow:
    """One kind's policy (random init), its exported graph and the timings of its three engines.

    Every engine carries its own state from step to step, as a driving loop does; the rows are
    timed in alternating blocks (`BLOCK` steps each) so a noisy neighbour on a shared machine
    slows every row alike.
    """

    def __init__(self, label: str, args: argparse.Namespace, observations: list, facts: dict) -> None:
        config = load_config(args.config, KINDS[label])
        processor = ProcessorState.from_run_facts(config, facts)
        torch.manual_seed(0)
        weights = build_policy(config.model, config.frame_shape, facts["history_sizes"] or None).state_dict()
        self.runtime = PolicyRuntime(config, processor, weights, label="random-init")
        self.inputs = [self.runtime.observe(o) for o in observations]  # the raw samples the graph reads
        self.runtime.reset()
        self.module = DeployedPolicy(self.runtime.policy, processor, action_infos(self.runtime.policy, {})).eval()
        model = to_onnx(self.module, example_inputs(self.module, processor), None, label)
        self.session = make_session(model.SerializeToString(), threads=args.threads)
        zero = self.module.kind.zero_state(self.module.policy, 1, "cpu")
        self.state: dict[str, torch.Tensor | None] = {"torch": zero, "onnxruntime": zero}
        self.ms: dict[str, list[float]] = {"act()": [], "torch": [], "onnxruntime": []}

    def block(self, observations: list, start: int) -> None:
        """Steps ``start`` .. ``start + BLOCK`` in each engine."""
        end = min(start + BLOCK, len(observations))
        for o in observations[start:end]:
            self.runtime.act(o)
        self.ms["act()"] += [s * 1e3 for s in self.runtime.latencies_s]
        self.runtime.latencies_s.clear()
        for engine in ("torch", "onnxruntime"):
            for sample in self.inputs[start:end]:
                self.ms[engine].append(self._graph_step(engine, sample))

    def _graph_step(self, engine: str, sample: dict) -> float:
        """ms of one step of the exported graph: ``module`` in torch, or its onnxruntime session."""
        frames, history, state = sample["frames"], sample.get("history"), self.state[engine]
        if self.module.stateful:  # a sequence graph: [B, L=1, ...]
            frames, history = frames[:, None], history[:, None] if history is not None else None
        feed = (frames, history, None, state)
        with torch.inference_mode():
            started = time.perf_counter()
            out = self.module(*feed) if engine == "torch" else self.session.run(None, _ort_feed(feed))
            elapsed = time.perf_counter() - started
        if self.module.stateful:
            self.state[engine] = torch.as_tensor(out[-1])
        return elapsed * 1e3

    def p50(self, engine: str) -> float:
        return percentile(self.ms[engine][WARMUP:], 50)

    def p99(self, engine: str) -> float:
        return percentile(self.ms[engine][WARMUP:], 99)


def kind_rows(args: argparse.Namespace, observations: list, facts: dict) -> None:
    """`KINDS`' rows: act(), and the exported step in torch and onnxruntime (see the docstring)."""
    rows = {label: KindRow(label, args, observations, facts) for label in KINDS}
    for start in range(0, len(observations), BLOCK):
        for row in rows.values():
            row.block(observations, start)
    print(f"{args.config.name}, batch 1, fp32, {args.threads} thread(s) (torch and onnxruntime), "
          f"{len(observations) - WARMUP} timed steps per engine; p50 / p99 ms")
    base = next(iter(rows.values()))
    for label, row in rows.items():
        print(f"{label:16s} " + "   ".join(f"{e} {row.p50(e):5.2f} / {row.p99(e):5.2f}" for e in row.ms)
              + f"   onnxruntime/torch {row.p50('onnxruntime') / row.p50('torch'):.2f}x   vs {next(iter(rows))}: "
              + f"torch {row.p50('torch') / base.p50('torch'):.2f}x, "
              + f"onnxruntime {row.p50('onnxruntime') / base.p50('onnxruntime'):.2f}x")


def _ort_feed(feed: tuple) -> dict[str, np.ndarray]:
    """The graph's inputs by name (`export.metadata`'s), from the torch call's arguments."""
    names = (FRAMES, HISTORY, LAST_ACTION, STATE)
    return {name: value.numpy() for name, value in zip(names, feed, strict=True) if value is not None}


if __name__ == "__main__":
    main()
