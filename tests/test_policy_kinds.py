"""Policy kinds (the registry), command conditioning (concat / branched, CIL) and the speed head.

One tiny intersection dataset (the traffic world's ``command`` is a 3-value one-hot) for the
module: 32x32 frames, the tiny backbone, a few batches per run. Every kind and mode builds,
trains, resumes bit-identically, drives, and exports with the parity check.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import quick, run_cli_here
from drivelab.config import ConfigError, ModelConfig, load_config
from drivelab.config.policy_section import POLICY_KINDS
from drivelab.evaluate.runtime import PolicyRuntime
from drivelab.export.run_export import ExportRequest, export_run
from drivelab.models import build_policy, summarize
from drivelab.models.conditioning import BranchedHead
from drivelab.models.kinds import get_kind, kind_names, kind_of
from drivelab.runs.checkpoints import load_weights, state_path, weights_path
from drivelab.runs.metrics import read_metrics
from drivelab.sim import make_env
from drivelab.train import train

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "traffic" / "intersection_pilotnet.yaml"
TINY = [
    "model.backbone={name: tiny, pool: flatten}", "model.neck=[16]",
    "model.heads=[{output: steering, widths: [8]}, {output: accel_brake, widths: [8]}]",
    "model.history={signals: [speed, purpose], signal_sizes: {purpose: 2}, length: 1, kind: dense, "
    "layers: 1, width: 8}",
    "data.cache=none", "train.warmup_batches=1", "train.log_every=2", "train.val_every=2",
]
LSTM = ["model.kind=lstm", "model.recurrent={layers: 1, hidden: 8}", "train.bptt.mode=window",
        "train.bptt.window=4"]
COMMAND = "model.command={{signal: command, mode: {mode}, values: 3}}"
VARIANTS = {
    "stateless": [],
    "lstm": LSTM,
    "concat": [COMMAND.format(mode="concat")],
    "branched-speed": [COMMAND.format(mode="branched"), "model.speed_head={weight: 0.5, widths: [8]}"],
    "lstm-branched-no-history": [*LSTM, COMMAND.format(mode="branched"), "model.history=null"],
}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("kinds") / "intersection.zarr"
    done = run_cli_here("collect", "--env", "intersection:density=0.3", "--episodes", "2", "--val-episodes", "1",
                        "--workers", "1", "--max-steps", "14", "--out", str(out))
    assert done.returncode == 0, done.stderr
    return out


def _config(dataset: Path, variant: str, *extra: str):
    return load_config(CONFIG, quick(dataset, *TINY, *VARIANTS[variant], *extra, size=32, batch_size=4))


def test_registry_matches_the_config_table() -> None:
    assert kind_names() == list(POLICY_KINDS) == ["stateless", "lstm", "transformer"]
    assert kind_of(ModelConfig()).name == "stateless"
    assert kind_of(ModelConfig(recurrent={"layers": 1})).name == "lstm"  # old configs: derived
    assert get_kind("lstm").step_kind == "sequences" and get_kind("stateless").step_kind == "frames"
    with pytest.raises(ConfigError, match="valid kinds: stateless, lstm, transformer"):
        get_kind("gru")


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_each_kind_trains_resumes_drives_and_exports(dataset: Path, tmp_path: Path, variant: str) -> None:
    n = 2
    cfg = _config(dataset, variant, f"train.max_batches={2 * n}", f"train.checkpoint_every={n}")
    run = train(cfg, runs_root=tmp_path / "runs").run
    final = load_weights(weights_path(run.checkpoints, 2 * n))
    weights_path(run.checkpoints, 2 * n).unlink()
    state_path(run.checkpoints, 2 * n).unlink()
    train(cfg, runs_root=tmp_path / "runs", resume=run.path)
    again = load_weights(weights_path(run.checkpoints, 2 * n))
    assert final.keys() == again.keys()
    assert all(torch.equal(final[k], again[k]) for k in final), "resume is bit-identical"
    rows = read_metrics(run.metrics_path)
    if "speed" in variant:
        assert any("speed_head_loss" in r for r in rows) and any("val/speed_head_loss" in r for r in rows)
    # drive a short episode step by step
    runtime = PolicyRuntime.from_ref(str(run.path))
    env = make_env("intersection:density=0.3")
    try:
        runtime.check_env(env)
        runtime.reset(0)
        obs = env.reset(seed=10_000)
        for _ in range(4):
            action = runtime.act(obs)
            result = env.step(np.array([action["steering"], action["accel_brake"]], np.float32))
            obs = result.observation
            if result.done:
                break
    finally:
        env.close()
    if "branched" not in variant:
        return  # the stateless, lstm (and concat: a history policy's) graphs: tests/test_export.py
    exported = export_run(ExportRequest(ref=str(run.path), out=tmp_path / "policy.onnx", frames=12))
    assert max(exported.parity.worst().values()) <= 1e-4
    assert "speed" not in " ".join(exported.card.outputs)


def test_branched_head_gets_gradient_only_in_the_active_branch() -> None:
    config = ModelConfig(backbone={"name": "tiny"}, neck=[16], heads=[{"output": "steering", "widths": [8]}],
                         command={"mode": "branched", "values": 3})
    policy = build_policy(config, (3, 32, 32))
    head = policy.heads["steering"]
    assert isinstance(head, BranchedHead) and len(head.branches) == 3
    window = torch.zeros(4, 1, 3)
    window[:, 0, 1] = 1.0  # every sample: command value 1
    policy(torch.randn(4, 3, 32, 32), window)["steering"].sum().backward()
    for index, branch in enumerate(head.branches):
        grads = [p.grad for p in branch.parameters()]
        if index == 1:
            assert any(g is not None and g.abs().sum() > 0 for g in grads)
        else:
            assert all(g is None or torch.count_nonzero(g) == 0 for g in grads), f"branch {index}"
    parts = summarize(policy, with_shapes=False).parts
    assert parts["heads.steering"].total == 3 * parts["heads.steering.branches.0"].total


def test_command_picks_the_branch_and_concat_reads_it() -> None:
    for mode in ("concat", "branched"):
        config = ModelConfig(backbone={"name": "tiny"}, neck=[16], heads=[{"output": "steering", "widths": [8]}],
                             command={"mode": mode, "values": 3})
        policy = build_policy(config, (3, 32, 32)).eval()
        frames = torch.randn(1, 3, 32, 32)
        with torch.no_grad():
            answers = {float(policy(frames, torch.eye(3)[c].view(1, 1, 3))["steering"]) for c in range(3)}
        assert len(answers) == 3, mode  # the command changes the action


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["model.kind=gru"], "valid kinds: stateless, lstm, transformer"),
        (["model.kind=stateless", "model.recurrent={layers: 1}"], "configures kind 'lstm'"),
        (["model.command={signal: route, mode: concat, values: 3}"], "route"),
        (["model.command={signal: command, mode: branched, values: 4}"], "command"),
        (["model.speed_head={}", "model.history=null"], "speed"),
    ],
    ids=["unknown-kind", "section-of-another-kind", "no-such-signal", "branch-count", "speed-without-speed"],
)
def test_bad_kind_or_command_is_one_line(dataset: Path, tmp_path: Path, overrides: list[str], message: str) -> None:
    runs = tmp_path / "runs"
    done = run_cli_here("train", str(CONFIG), *quick(dataset, *TINY, *overrides, size=32, batch_size=4),
                        "train.max_batches=1", "--runs", str(runs), "--no-progress")
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], done.stderr
    assert not runs.exists() or not any(runs.iterdir())
