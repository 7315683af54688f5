"""Issue 29, the checkpoint and ONNX side: damaged checkpoints, edited ONNX metadata, diagnoses kept.

Every case uses real files: a real tiny run (PilotNet frames + a speed history, a 3-bin delta
classification head for steering and a regression head for throttle, so the metadata has bins,
a delta column and a history), its real checkpoint rewritten with damaged tensors, and its real
ONNX export with ``metadata_props`` edited through the ``onnx`` package. Each refusal is one
``error:`` line naming the checkpoint (or file) and what is wrong, and leaves no file behind.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import onnx
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from conftest import CONFIGS, quick, run_cli_here
from drivelab.config import load_config
from drivelab.diagnose.job import DiagnoseRequest, diagnose
from drivelab.diagnose.report import save_report
from drivelab.export import ExportRequest, MetadataError, OnnxRuntime, export_run
from drivelab.export.parity import ParityReport
from drivelab.runs.folder import RunFolder, resolve_checkpoint
from drivelab.train import train

BUDGET = ("train.max_batches=2", "train.checkpoint_every=2", "train.val_every=null",
          "train.warmup_batches=0", "train.log_every=1")


@pytest.fixture(scope="module")
def run(small_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 3-bin delta steering head, a throttle regression head, a speed history."""
    config = load_config(CONFIGS / "carracing" / "pilotnet_3bin_steering.yaml", quick(
        small_dataset, *BUDGET, "model.heads.steering.bins=charles", "model.heads.steering.delta=true", size=64))
    return train(config, runs_root=tmp_path_factory.mktemp("runs")).run.path


@pytest.fixture(scope="module")
def exported(run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_run(ExportRequest(str(run), out=tmp_path_factory.mktemp("onnx") / "policy.onnx", frames=16)).path


def _damaged(run: Path, where: Path, edit: Callable[[dict[str, torch.Tensor]], None]) -> Path:
    """A copy of ``run`` whose checkpoint's tensors ``edit`` rewrote (a real safetensors file)."""
    copy = where / f"{run.name.rsplit('_v', 1)[0]}_v9"
    shutil.copytree(run, copy, ignore=shutil.ignore_patterns("diagnosis"))
    _, _, path = resolve_checkpoint(str(copy))
    with safe_open(str(path), "pt") as fh:
        tensors, metadata = {k: fh.get_tensor(k) for k in fh.keys()}, fh.metadata()  # noqa: SIM118
    edit(tensors)
    save_file(tensors, str(path), metadata=metadata)
    return copy


def _refused(*args: str) -> str:
    result = run_cli_here(*args)
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
    return lines[0]


def _no_files(folder: Path) -> None:
    assert [p.name for p in folder.iterdir()] == [], list(folder.iterdir())


# ---------------------------------------------------------------------------- items 5, 6, 16
def test_an_onnx_file_whose_weights_answer_nan_is_named_while_driving(exported: Path, tmp_path: Path) -> None:
    import numpy as np
    from onnx import numpy_helper

    model = onnx.load(str(exported))
    for init in model.graph.initializer:
        values = numpy_helper.to_array(init)
        if values.dtype == np.float32 and values.size > 100:  # the weights, not the clip bounds
            init.CopyFrom(numpy_helper.from_array(np.full_like(values, np.nan), init.name))
    damaged = tmp_path / "nan.onnx"
    onnx.save(model, str(damaged))
    result = run_cli_here("eval", str(damaged), "--episodes", "1", "--max-steps", "5")
    assert result.returncode == 2 and "Traceback" not in result.stderr + result.stdout
    assert "nan.onnx answered NaN or inf for 'accel_brake'" in " ".join((result.stdout + result.stderr).split())


def _all_nan(tensors: dict[str, torch.Tensor]) -> None:
    for name, tensor in tensors.items():
        tensors[name] = torch.full_like(tensor, float("nan"))


def test_a_nan_checkpoint_is_refused_by_export_eval_and_diagnose(run: Path, tmp_path: Path) -> None:
    nan = _damaged(run, tmp_path, _all_nan)
    out = tmp_path / "out"
    out.mkdir()
    label = f"{nan.name}@2"
    for args in (["export", str(nan), "--out", str(out / "nan.onnx")],
                 ["eval", str(nan), "--engine", "onnx", "--episodes", "1", "--max-steps", "5"],
                 ["eval", str(nan), "--episodes", "1", "--max-steps", "5"],
                 ["diagnose", str(nan), "--tracks", "0", "--json", str(out / "d.json")]):
        line = _refused(*args)
        assert label in line and "non-finite" in line and "parity passed" not in line, line
    _no_files(out)
    assert not (nan / "diagnosis").exists()


def _nan_from_finite_weights(tensors: dict[str, torch.Tensor]) -> None:
    """Every weight finite, every answer NaN: huge neck features times +-huge head weights give
    +inf and -inf products, and their sum is NaN (in torch and in onnxruntime alike)."""
    tensors["neck.0.bias"] = torch.full_like(tensors["neck.0.bias"], 1e20)
    for head in ("steering", "accel_brake"):
        weight = torch.full_like(tensors[f"heads.{head}.0.weight"], 1e20)
        weight[:, 1::2] = -1e20
        tensors[f"heads.{head}.0.weight"] = weight


def test_non_finite_outputs_fail_parity_and_diagnose_naming_the_checkpoint(run: Path, tmp_path: Path) -> None:
    broken = _damaged(run, tmp_path, _nan_from_finite_weights)
    out = tmp_path / "out"
    out.mkdir()
    line = _refused("export", str(broken), "--out", str(out / "broken.onnx"), "--frames", "8")
    assert f"{broken.name}@2: parity failed: output" in line and "NaN or infinite" in line, line
    assert "nothing was written" in line
    _no_files(out)  # neither the file nor its staging name
    line = _refused("eval", str(broken), "--engine", "onnx", "--episodes", "1", "--max-steps", "5")
    assert f"{broken.name}@2: parity failed: output" in line and "NaN or infinite" in line, line
    line = _refused("diagnose", str(broken), "--tracks", "0")
    assert f"{broken.name}@2 answers NaN or inf" in line and "nothing to diagnose" in line, line
    assert not (broken / "diagnosis").exists()


def test_parity_report_never_passes_nan() -> None:
    import numpy as np

    report = ParityReport()
    report.add("batch 1", {"a": np.array([np.nan])}, {"a": np.array([np.nan])})
    assert report.worst() == {"a": float("inf")}
    with pytest.raises(Exception, match=r"output 'a' is NaN or infinite in the torch runtime and onnxruntime"):
        report.check(1e-4, "run@2")
    report = ParityReport()
    report.add("batch 1", {"a": np.array([np.inf])}, {"a": np.array([0.5])})
    with pytest.raises(Exception, match=r"NaN or infinite in the onnxruntime at batch 1"):
        report.check(1e-4, "run@2")


def test_a_tensor_of_another_shape_is_one_line_naming_it(run: Path, tmp_path: Path) -> None:
    def widen(tensors: dict[str, torch.Tensor]) -> None:
        tensors["neck.0.weight"] = torch.zeros(100, 17)

    wrong = _damaged(run, tmp_path, widen)
    out = tmp_path / "out"
    out.mkdir()
    for args in (["export", str(wrong), "--out", str(out / "w.onnx")],
                 ["eval", str(wrong), "--episodes", "1", "--max-steps", "5"],
                 ["diagnose", str(wrong), "--tracks", "0"]):
        line = _refused(*args)
        assert f"{wrong.name}@2: checkpoint tensor 'neck.0.weight' has shape [100, 17]" in line, line
        assert "the config builds [100, " in line and "Traceback" not in line
    _no_files(out)


def test_a_crafted_tensor_name_is_cut_short(run: Path, tmp_path: Path) -> None:
    def rename(tensors: dict[str, torch.Tensor]) -> None:
        tensors["x" * 5000] = tensors.pop("neck.0.bias")

    crafted = _damaged(run, tmp_path, rename)
    line = _refused("export", str(crafted), "--out", str(tmp_path / "c.onnx"))
    assert "does not fit its config" in line and "'neck.0.bias'" in line and len(line) < 600, len(line)


# ---------------------------------------------------------------------------- item 7
def _edit_metadata(source: Path, target: Path, **changes: object) -> Path:
    """``source`` with the JSON value of each ``changes`` key replaced in its ``metadata_props``."""
    model = onnx.load(str(source))
    for entry in model.metadata_props:
        if entry.key in changes:
            entry.value = json.dumps(changes[entry.key])
    onnx.save(model, str(target))
    return target


def _props(path: Path) -> dict[str, object]:
    return {p.key: json.loads(p.value) for p in onnx.load(str(path)).metadata_props if p.key != "drivelab_format"}


def test_the_unedited_export_opens_and_its_metadata_is_what_the_checks_expect(exported: Path) -> None:
    runtime = OnnxRuntime.from_file(exported)
    assert runtime.card.delta_heads == ("steering",) and runtime.card.history_signals == ("speed",)
    assert runtime.card.outputs == ("steering", "steering_logits", "accel_brake")


def _edits(props: dict) -> list[tuple[str, dict[str, object]]]:
    """(the field the refusal must name, the metadata edit)."""
    steering, throttle = props["actions"]
    fewer_bins = {**steering, "bins": steering["bins"][:-1]}
    return [
        ("actions", {"actions": [steering]}),  # the car would never accelerate
        ("actions", {"actions": [fewer_bins, throttle]}),
        ("actions", {"actions": [steering, {**throttle, "low": 1.0, "high": -1.0}]}),
        ("history_signals", {"history_signals": ["gyro"]}),  # was a KeyError
        ("history_signals", {"history_signals": []}),
        ("history_signals", {"history_signals": ["s" * 5000], "history_sizes": {"s" * 5000: 1}}),
        ("history_sizes", {"history_sizes": {"speed": 2}}),
        ("history_length", {"history_length": 7}),
        ("frame_shape", {"frame_shape": [64, 64, 3]}),
        ("frame_stack", {"frame_stack": 2}),
        ("frame_shape", {"frame_shape": [96, 96, 1]}),
        ("history_length", {"history_length": 0}),
        ("delta_heads", {"delta_heads": []}),
        ("recurrent", {"recurrent": True}),
        ("inputs", {"inputs": ["frames", "history"]}),
        ("outputs", {"outputs": ["accel_brake", "steering", "steering_logits"]}),
    ]


def test_edited_metadata_is_refused_naming_the_field_and_the_file(exported: Path, tmp_path: Path) -> None:
    props = _props(exported)
    for index, (field, change) in enumerate(_edits(props)):
        bad = _edit_metadata(exported, tmp_path / f"edit{index}.onnx", **change)
        with pytest.raises(MetadataError) as refused:
            OnnxRuntime.from_file(bad)
        message = str(refused.value)
        assert f"metadata {field!r} does not match the graph" in message, (field, message)
        assert str(bad) in message and "\n" not in message


def test_eval_of_an_edited_file_is_one_line_before_driving(exported: Path, tmp_path: Path) -> None:
    props = _props(exported)
    one_action = _edit_metadata(exported, tmp_path / "one_action.onnx", actions=props["actions"][:1])
    line = _refused("eval", str(one_action), "--episodes", "1", "--max-steps", "5")
    assert "metadata 'actions' does not match the graph" in line and str(one_action) in line
    unknown = _edit_metadata(exported, tmp_path / "gyro.onnx", history_signals=["gyro"])
    assert "metadata 'history_signals'" in _refused("eval", str(unknown), "--episodes", "1", "--max-steps", "5")
    # consistent with itself and with the graph, but a signal the env does not record: check_fit's line
    gyro = _edit_metadata(exported, tmp_path / "gyro2.onnx", history_signals=["gyro"], history_sizes={"gyro": 1})
    line = _refused("eval", str(gyro), "--episodes", "1", "--max-steps", "5")
    assert "gyro" in line and "Traceback" not in line, line


# ---------------------------------------------------------------------------- item 10
def test_a_diagnosis_on_other_data_is_kept_beside_the_first(run: Path, small_dataset: Path, tmp_path: Path) -> None:
    from drivelab.reports.card import write_card

    other = tmp_path / "other data.zarr"
    shutil.copytree(small_dataset, other)
    root = run.parent.parent
    requests = [DiagnoseRequest(str(run), root, tracks=0),
                DiagnoseRequest(str(run), root, tracks=0, dataset=other),
                DiagnoseRequest(str(run), root, tracks=0, split="train")]
    saved = [save_report(diagnose(r), r) for r in requests]
    names = [[p.name for p in pair] for pair in saved]
    assert names[0] == ["diagnosis_batch2.json", "reliance_batch2.png"]
    assert names[1][0].startswith("diagnosis_batch2_other-data-") and names[1][1].startswith("reliance_batch2_other")
    assert names[2] == ["diagnosis_batch2_train.json", "reliance_batch2_train.png"]
    records = [json.loads(pair[0].read_text()) for pair in saved]
    assert [r["split"] for r in records] == ["val", "val", "train"]
    assert records[1]["dataset"] == str(other) and records[0]["dataset"] != str(other)
    assert all(p.is_file() for pair in saved for p in pair)  # all three kept
    again = save_report(diagnose(requests[0]), requests[0])  # the same data again: regenerated in place
    assert again == saved[0]
    card = write_card(RunFolder.open(run)).markdown.read_text()
    assert "on the val split" in card and "diagnosis/reliance_batch2.png" in card  # the newest one
    shutil.rmtree(run / "diagnosis")


# ---------------------------------------------------------------------------- item 28's verdict
def test_a_head_that_relies_on_nothing_is_not_called_a_shortcut() -> None:
    """The failing CPU's figures: scrambling the frames or speed lowered steering's loss a little
    (an undertrained head), all shares 0, which the verdict read as 'relies on speed'."""
    from drivelab.config.diagnose_section import DiagnoseConfig
    from drivelab.diagnose.probe import ProbeResult
    from drivelab.diagnose.reliance import Effect, GroupReliance
    from drivelab.diagnose.verdict import verdicts

    def group(name: str, loss: float) -> GroupReliance:
        effect = Effect(loss, loss - 0.001, loss + 0.001, loss, loss, loss)
        return GroupReliance(name, effect, effect, 0.0)

    nothing = {"steering": [group("frames", -0.00314), group("speed", -0.00045)]}
    (finding,) = verdicts(nothing, {}, ProbeResult([], {}, {}), {"steering"}, None, None, DiagnoseConfig())["steering"]
    assert not finding.flagged and "too little trained to tell" in finding.text and "shortcut" not in finding.text
