"""Export: a real tiny run -> ONNX with its pipeline, parity on recorded frames, the onnx engine.

One frame policy carries most features at once (an LSTM history branch with a thought vector,
a 7-bin delta classification head for steering, a regression head for throttle), so one export
checks logits, bins, the last-action input and the history standardisation in the graph. The
recurrent (BPTT) policy checks the (h, c) state in and out at other batch sizes and sequence
lengths than the export example's.
"""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest
import torch

from conftest import CONFIGS, PILOTNET, quick, run_cli_here
from drivelab.config import load_config
from drivelab.evaluate.runner import drive_and_measure
from drivelab.evaluate.runtime import PolicyDriver, PolicyRuntime
from drivelab.export import FORMAT, ExportRequest, OnnxRuntime, PolicyCard, export_run
from drivelab.export.graph import DeployedPolicy, action_infos, example_inputs
from drivelab.export.metadata import FORMAT_KEY, VERSION_KEY
from drivelab.export.writer import ExportError, to_onnx
from drivelab.models import build_policy
from drivelab.processor.state import ProcessorState
from drivelab.runs.folder import RunFolder
from drivelab.sim import make_env
from drivelab.train import train

BUDGET = ("train.max_batches=2", "train.checkpoint_every=2", "train.val_every=null",
          "train.warmup_batches=0", "train.log_every=1")


@pytest.fixture(scope="module")
def frame_run(small_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """LSTM history (thought vector) + a delta classification head + a regression head."""
    config = load_config(CONFIGS / "carracing" / "pilotnet_3bin_steering.yaml", quick(
        small_dataset, *BUDGET, "model.history.kind=lstm", "model.history.width=8",
        "model.heads.steering.bins=charles", "model.heads.steering.delta=true", size=64))
    return train(config, runs_root=tmp_path_factory.mktemp("runs")).run.path


@pytest.fixture(scope="module")
def exported(frame_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("onnx") / "policy.onnx"
    result = run_cli_here("export", str(frame_run), "--out", str(out), "--frames", "24")
    assert result.returncode == 0, result.stderr
    assert "batch 1" in result.stdout and "batch 7" in result.stdout and "parity passed" in result.stdout
    return out


def test_export_writes_the_pipeline_and_its_metadata(exported: Path, frame_run: Path) -> None:
    model = onnx.load(str(exported))
    props = {p.key: p.value for p in model.metadata_props}
    card = PolicyCard.from_props(props, str(exported))
    assert props[FORMAT_KEY] == FORMAT and card.run == f"{frame_run.name}@2"
    assert card.inputs == ("frames", "history", "last_action")
    assert card.outputs == ("steering", "steering_logits", "accel_brake")
    assert card.history_signals == ("speed",) and card.history_length == 4 and card.delta_heads == ("steering",)
    steering = card.actions[0]
    assert steering.bins == pytest.approx((-0.3, -0.1, -0.03, 0.0, 0.03, 0.1, 0.3)) and steering.delta == (-0.4, 0.4)
    assert steering.low == -1.0 and steering.high == 1.0  # the recorded action's range
    assert card.weights_sha256.startswith("sha256:") and len(card.weights_sha256) == 71
    assert set(card.parity) == set(card.outputs) and max(card.parity.values()) < 1e-4
    frames = model.graph.input[0].type.tensor_type
    assert frames.elem_type == onnx.TensorProto.UINT8
    assert frames.shape.dim[0].dim_param == "batch"  # a dynamic batch axis
    assert [d.dim_value for d in frames.shape.dim[1:]] == [3, 96, 96]  # raw frames: resize in-graph


def test_onnx_engine_drives_like_the_torch_engine(exported: Path, frame_run: Path) -> None:
    """The same track, the same steps: identical rewards from the runner's own episode loop."""
    env = make_env("carracing", max_steps=60)
    try:
        rows = [drive_and_measure(env, PolicyDriver(runtime, env), 10000, 60)
                for runtime in (PolicyRuntime.from_ref(str(frame_run)), OnnxRuntime.from_file(exported))]
    finally:
        env.close()
    torch_row, onnx_row = (r.to_dict() for r in rows)
    assert onnx_row == torch_row and torch_row["steps"] == 60


def test_recurrent_policy_exports_its_state(small_dataset: Path, tmp_path: Path) -> None:
    config = load_config(CONFIGS / "pilot" / "tiny_lstm_net.yaml", quick(
        small_dataset, *BUDGET, "model.recurrent.hidden=16", "train.bptt.window=4", size=32, batch_size=2))
    run = train(config, runs_root=tmp_path).run.path
    result = export_run(ExportRequest(str(run), out=tmp_path / "lstm.onnx", frames=30))
    assert result.card.recurrent and result.card.state_shape == (2, 2, 16)
    assert result.card.inputs == ("frames", "state") and result.card.outputs[-1] == "state_out"
    assert set(result.parity.cases) == {"batch 1 x 1 steps", "batch 3 x 5 steps"}
    assert max(result.parity.worst().values()) < 1e-4 and "state_out" in result.parity.worst()
    graph = onnx.load(str(result.path)).graph
    shapes = {v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]
              for v in (*graph.input, *graph.output)}
    assert shapes["frames"] == ["batch", "steps", 3, 96, 96] and shapes["state"] == [2, 2, "batch", 16]
    assert shapes["steering"] == ["batch", "steps"] and shapes["state_out"] == [2, 2, "batch", 16]


def test_refusals_are_one_line_and_leave_no_file(frame_run: Path, exported: Path, tmp_path: Path) -> None:
    def refused(*args: str) -> str:
        result = run_cli_here(*args)
        assert result.returncode == 2, result.stdout + result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
        return lines[0]

    empty = RunFolder.create(tmp_path / "runs", "empty")
    (empty.path / "config.yaml").write_text(PILOTNET.read_text())
    assert "has no checkpoint yet" in refused("export", str(empty.path))
    assert "--format 'tflite' is unknown" in refused("export", str(frame_run), "--format", "tflite")
    assert "--opset 11" in refused("export", str(frame_run), "--opset", "11")
    out = tmp_path / "strict.onnx"
    line = refused("export", str(frame_run), "--out", str(out), "--tolerance", "1e-12", "--frames", "8")
    assert "parity failed: output" in line and "nothing was written" in line
    assert list(tmp_path.glob("*.onnx")) == [] and list(tmp_path.glob(".*")) == []

    model = onnx.load(str(exported))
    props = {p.key: p.value for p in model.metadata_props}
    for key, value, expected in ((FORMAT_KEY, None, "has no drivelab metadata"),
                                 (VERSION_KEY, "2", "format version '2'")):
        del model.metadata_props[:]
        for k, v in props.items():
            if k != key or value is not None:
                entry = model.metadata_props.add()
                entry.key, entry.value = k, (value if k == key else v)
        bad = tmp_path / f"bad_{key}.onnx"
        onnx.save(model, str(bad))
        assert expected in refused("eval", str(bad), "--episodes", "1")
    assert "runs on the onnx engine" in refused("eval", str(exported), "--engine", "torch")


class Polygamma(torch.nn.Module):
    """An op with no ONNX translation, inside the neck."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.polygamma(1, x.abs() + 1)


def test_an_op_without_onnx_translation_is_named_with_its_module() -> None:
    config = load_config(PILOTNET, ["model.history=null", "data.input_size=[64,64]"])
    policy = build_policy(config.model, config.frame_shape).eval()
    policy.neck.append(Polygamma())
    processor = ProcessorState.from_config(config, (64, 64, 3), {})
    module = DeployedPolicy(policy, processor, action_infos(policy, {}))
    with pytest.raises(ExportError, match=r"aten\.polygamma\.default in module neck\.2 \(Polygamma\)"):
        to_onnx(module, example_inputs(module, processor), None, "test")
