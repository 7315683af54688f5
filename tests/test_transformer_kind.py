"""The temporal transformer kind (``model.kind: transformer``, issue 32 item 4).

Tiny throughout: 32x32 frames, the tiny backbone, K = 4, a 2-episode intersection dataset. The
kind builds, trains on sliding windows (its token buffer carried from batch to batch), resumes
bit-identically, drives in both engines, exports with parity; its rolling buffer answers what
re-encoding the last K frames answers, step by step.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from conftest import quick, run_cli_here
from drivelab.config import ModelConfig, load_config
from drivelab.evaluate.runtime import PolicyRuntime
from drivelab.export.engine import OnnxRuntime
from drivelab.export.run_export import ExportRequest, export_run
from drivelab.models import build_policy
from drivelab.models.kinds import kind_of
from drivelab.models.temporal import TemporalPolicy
from drivelab.reports.figures import architecture_blocks
from drivelab.runs.checkpoints import load_weights, state_path, weights_path
from drivelab.sim import make_env
from drivelab.train import train

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "traffic" / "intersection_pilotnet.yaml"
K = 4
TINY = [
    "model.backbone={name: tiny, pool: flatten}", "model.neck=[16]",
    "model.heads=[{output: steering, widths: [8]}, {output: accel_brake, widths: [8]}]",
    "model.history={signals: [speed, purpose], signal_sizes: {purpose: 2}, length: 1, kind: dense, "
    "layers: 1, width: 8}",
    "model.kind=transformer", f"model.transformer={{window: {K}, layers: 2, heads: 2, width: 16}}",
    "data.cache=none", "train.warmup_batches=1", "train.log_every=2", "train.val_every=2",
]
EPISODE_STEPS = 14


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("transformer") / "intersection.zarr"
    done = run_cli_here("collect", "--env", "intersection:density=0.3", "--episodes", "2", "--val-episodes", "1",
                        "--workers", "1", "--max-steps", str(EPISODE_STEPS), "--out", str(out))
    assert done.returncode == 0, done.stderr
    return out


def _drive(act, steps: int = 6) -> tuple[list[dict[str, float]], list]:
    """A short held-out episode driven by ``act``: its actions and the observations they answered."""
    env = make_env("intersection:density=0.3")
    actions, observations = [], []
    try:
        obs = env.reset(seed=10_000)
        for _ in range(steps):
            action = act(obs)
            actions.append(action)
            observations.append(obs)
            result = env.step(np.array([action["steering"], action["accel_brake"]], np.float32))
            obs = result.observation
            if result.done:
                break
    finally:
        env.close()
    return actions, observations


def test_trains_resumes_drives_and_exports(dataset: Path, tmp_path: Path) -> None:
    n = 2  # sliding windows of 4 moved 2 on: the buffer is carried (and kept at step 2) across batches
    cfg = load_config(CONFIG, quick(dataset, *TINY, "train.bptt={mode: sliding, window: 4, step: 2}",
                                    f"train.max_batches={2 * n}", f"train.checkpoint_every={n}",
                                    "model.transformer.dropout=0.1", size=32, batch_size=1))
    run = train(cfg, runs_root=tmp_path / "runs").run
    final = load_weights(weights_path(run.checkpoints, 2 * n))
    weights_path(run.checkpoints, 2 * n).unlink()
    state_path(run.checkpoints, 2 * n).unlink()
    train(cfg, runs_root=tmp_path / "runs", resume=run.path)
    again = load_weights(weights_path(run.checkpoints, 2 * n))
    assert final.keys() == again.keys() and any(k.startswith("temporal.blocks.1.") for k in final)
    assert all(torch.equal(final[k], again[k]) for k in final), "resume is bit-identical"

    runtime = PolicyRuntime.from_ref(str(run.path))
    assert isinstance(runtime.policy, TemporalPolicy)
    runtime.reset(0)
    torch_actions, observations = _drive(runtime.act)

    exported = export_run(ExportRequest(ref=str(run.path), out=tmp_path / "policy.onnx", frames=EPISODE_STEPS))
    assert max(exported.parity.worst().values()) <= 1e-4 and "state_out" in exported.parity.worst()
    assert exported.card.recurrent and exported.card.state_shape == (1, K, 16 + 1)
    graph = onnx.load(str(exported.path)).graph
    shapes = {v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]
              for v in (*graph.input, *graph.output)}
    assert shapes["state"] == shapes["state_out"] == [1, K, "batch", 17]
    engine = OnnxRuntime.from_file(exported.path)
    engine.reset(0)
    onnx_actions = [engine.act(obs) for obs in observations]  # the same frames, the buffer in the graph's state
    assert len(onnx_actions) > K
    for ours, theirs in zip(onnx_actions, torch_actions, strict=True):
        assert all(abs(ours[k] - theirs[k]) <= 1e-4 for k in ("steering", "accel_brake"))


def test_rolling_buffer_equals_reencoding_the_last_k_frames() -> None:
    """Step by step with the buffer == the last K frames encoded afresh == one sequence call."""
    config = ModelConfig(kind="transformer", backbone={"name": "tiny"}, neck=[16],
                         heads=[{"output": "steering", "widths": [8]}],
                         history={"signals": ["speed"], "length": 2, "kind": "dense", "layers": 1, "width": 4},
                         transformer={"window": K, "layers": 2, "heads": 2, "width": 16})
    torch.manual_seed(0)
    policy = build_policy(config, (3, 32, 32)).eval()
    kind = kind_of(policy)
    steps = 3 * K
    frames, history = torch.randn(2, steps, 3, 32, 32), torch.randn(2, steps, 2, 1)
    with torch.no_grad():
        state, stepped = None, []
        for t in range(steps):
            results, state = kind.step(policy, frames[:, t], history[:, t], state)
            stepped.append(results["steering"])
        stepped = torch.stack(stepped, 1)
        fresh = torch.stack([policy(frames[:, max(0, t - K + 1): t + 1], history[:, max(0, t - K + 1): t + 1])
                             ["steering"][:, -1] for t in range(steps)], 1)
        whole = policy(frames, history)
        torch.testing.assert_close(stepped, fresh, rtol=0, atol=1e-5)
        torch.testing.assert_close(whole["steering"], stepped, rtol=0, atol=1e-5)
        torch.testing.assert_close(whole["state"], state, rtol=0, atol=1e-6)
        assert state.shape == (1, K, 2, 17)
        # the trainer's two other calls: the state at a sliding window's step, and the warmup's
        kept = policy(frames, history, keep_at=5)["state"]
        torch.testing.assert_close(kept, policy(frames[:, :5], history[:, :5])["state"], rtol=0, atol=1e-6)
        warm = policy(frames, history, lengths=torch.tensor([3, 0]))["state"]
        torch.testing.assert_close(warm[:, :, :1], policy(frames[:1, :3], history[:1, :3])["state"], rtol=0, atol=1e-6)
        assert torch.count_nonzero(warm[:, :, 1]) == 0  # a row without earlier frames: empty buffer
        # the window reaches no further back than K steps
        changed = frames.clone()
        changed[:, 0] = 0
        late = policy(changed, history)["steering"]
        assert not torch.allclose(late[:, K - 1], whole["steering"][:, K - 1])
        torch.testing.assert_close(late[:, K:], whole["steering"][:, K:], rtol=0, atol=1e-5)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ([f"model.transformer.window={EPISODE_STEPS + 2}", "train.bptt={mode: window, window: 4}"],
         f"model.transformer.window {EPISODE_STEPS + 2} is longer than every 'train' episode (the longest "
         f"has {EPISODE_STEPS} frames)"),
        (["model.transformer.heads=3"], "3 heads do not divide width 16"),
        (["model.recurrent={layers: 1}", "train.bptt={mode: window, window: 4}"], "configures kind 'lstm'"),
        ([], "model.transformer needs sequences"),
    ],
    ids=["window-longer-than-episodes", "heads-width", "lstm-section", "no-bptt"],
)
def test_bad_transformer_config_is_one_line(dataset: Path, tmp_path: Path, overrides: list[str], message: str) -> None:
    runs = tmp_path / "runs"
    done = run_cli_here("train", str(CONFIG), *quick(dataset, *TINY, *overrides, size=32, batch_size=2),
                        "train.max_batches=1", "--runs", str(runs), "--no-progress")
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], done.stderr
    assert not runs.exists() or not any(runs.iterdir())


def test_the_card_draws_the_temporal_block() -> None:
    config = load_config(CONFIG, [*TINY, "train.bptt.mode=window"])
    columns = architecture_blocks(config, {}, set(), {})
    block = next(b for column in columns for b in column if b.key == "temporal")
    assert "last 4 steps" in block.detail and "2 x 16, 2 heads" in block.detail
