"""`export_run`: a run's checkpoint -> a checked ONNX file, or one error line and no file.

The order is the promise: every argument and the output path are checked before any work; the
policy is loaded with its checkpoint, its dataset opened (the parity frames and the action
ranges come from it); the graph is exported and written to a temporary name beside the output;
onnxruntime loads that file and the parity check runs on it; only then does the file get its
parity figures and its real name (`drivelab.outputs.atomic_output`). A failure at any step leaves
no file that looks like a valid export.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from drivelab.config import load_config
from drivelab.data.store import DatasetStore
from drivelab.export.consistency import check_session
from drivelab.export.engine import make_session
from drivelab.export.graph import DeployedPolicy, action_infos, example_inputs
from drivelab.export.metadata import PolicyCard
from drivelab.export.parity import (
    DEFAULT_TOLERANCE,
    ParityReport,
    TorchReference,
    check_frame_policy,
    check_recurrent_policy,
)
from drivelab.export.samples import read_samples
from drivelab.export.writer import ExportError, check_opset, exporter_name, to_onnx, with_metadata
from drivelab.models.factory import load_trained_policy
from drivelab.outputs import atomic_output, check_output
from drivelab.processor.fit import DataSpec, PolicyNeeds, check_fit
from drivelab.runs.checkpoints import load_weights
from drivelab.runs.dataset_path import run_dataset
from drivelab.runs.folder import resolve_checkpoint
from drivelab.runs.world import check_same_world, recorded_env

FORMATS = ("onnx",)
DEFAULT_FRAMES = 64


@dataclass(frozen=True)
class ExportRequest:
    """What `drivelab export` was asked (``out`` None: ``<run>@<batch>.onnx`` here)."""

    ref: str
    runs_root: Path = Path("runs")
    out: Path | None = None
    fmt: str = "onnx"
    opset: int | None = None
    dataset: Path | None = None
    split: str | None = None
    frames: int = DEFAULT_FRAMES
    tolerance: float = DEFAULT_TOLERANCE
    force: bool = False


@dataclass(frozen=True)
class ExportResult:
    path: Path
    card: PolicyCard
    parity: ParityReport
    seconds: float
    size_bytes: int


def _check_request(request: ExportRequest) -> None:
    if request.fmt not in FORMATS:
        raise ExportError(f"--format {request.fmt!r} is unknown: drivelab exports {', '.join(FORMATS)}")
    check_opset(request.opset)
    if not request.tolerance > 0:
        raise ExportError(f"--tolerance must be above 0 (got {request.tolerance})")
    if request.frames < 8:
        raise ExportError(f"--frames must be at least 8 (got {request.frames})")


def export_run(request: ExportRequest, on_stage: Callable[[str], None] | None = None) -> ExportResult:
    """Export ``request.ref`` with its input pipeline, check parity, write the file (see module).

    ``on_stage`` hears the slow steps as they start (tracing the graph takes tens of seconds)."""
    stage = on_stage or (lambda _text: None)
    started = time.perf_counter()
    _check_request(request)
    run, batch, weights_file = resolve_checkpoint(request.ref, request.runs_root)
    label = f"{run.name}@{batch}"
    out = check_output(request.out or Path(f"{label}.onnx"), "--out", (".onnx",), force=request.force)
    config = load_config(run.config_path)
    if config.task != "driving":
        raise ExportError(f"{run.name} is a {config.task} run: `drivelab export` writes driving policies")
    processor = run.read_processor(config)
    # the run's own dataset, found from any working directory (the parity check runs on its frames)
    source = Path(request.dataset) if request.dataset is not None else run_dataset(run, config.data.path)
    store = DatasetStore.open(source)
    trained_in = recorded_env(run)
    if request.dataset is not None and store.meta.world_name() is not None:
        check_same_world(trained_in, store.meta.world_name() or "", label, f"--dataset {source}")
    check_fit(DataSpec.of_dataset(store), PolicyNeeds.of_processor(processor), who=label, error=ExportError)
    policy = load_trained_policy(config, processor.history.sizes, load_weights(weights_file), label)
    actions = action_infos(policy, {s.name: (s.low, s.high) for s in store.meta.actions})
    module = DeployedPolicy(policy, processor, actions)
    _check_names(module, label)
    samples = read_samples(store, request.split or config.data.val_split or "val", processor,
                           request.frames, tuple(a.name for a in actions if a.delta is not None))
    stage(f"tracing {label} to ONNX (torch.onnx, dynamo)")
    model = to_onnx(module, example_inputs(module, processor), request.opset, label)
    opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    card = PolicyCard(
        run=label, run_path=str(run.path.resolve()), weights_sha256=_sha256(weights_file),
        dataset=str(store.path), env=trained_in, frame_shape=processor.frames.source_shape,
        frame_stack=processor.frames.stack, history_signals=processor.history.signals,
        history_sizes=dict(processor.history.sizes), history_length=processor.history.length,
        actions=tuple(actions), delta_heads=tuple(a.name for a in actions if a.delta is not None),
        recurrent=module.stateful,
        state_shape=module.kind.state_shape(policy),
        inputs=tuple(module.input_names), outputs=tuple(module.output_names),
        exporter=exporter_name(), opset=opset, tolerance=request.tolerance,
    )
    reference = TorchReference(policy, processor, actions)
    with atomic_output(out, force=request.force, flag="--out") as staged:
        staged.write_bytes(with_metadata(model, card))
        session = make_session(staged)
        check_session(card, session, label)  # what every reader of the file will check
        names = [o.name for o in session.get_outputs()]

        def run_graph(feed: dict) -> dict:
            return dict(zip(names, session.run(names, feed), strict=True))

        stage(f"parity: onnxruntime against the torch runtime on up to {request.frames} recorded frames")
        check = check_recurrent_policy if module.stateful else check_frame_policy
        report = check(run_graph, reference, samples)
        report.check(request.tolerance, label)  # raises: the staged file is removed
        card = card.model_copy(update={"parity": report.worst()})
        staged.write_bytes(with_metadata(model, card))
    return ExportResult(out, card, report, time.perf_counter() - started, out.stat().st_size)


def _check_names(module: DeployedPolicy, label: str) -> None:
    """ONNX values need distinct names: an action called like an input cannot be exported."""
    clash = set(module.input_names) & set(module.output_names)
    if clash:
        raise ExportError(f"{label}: output(s) {sorted(clash)} share a name with the graph's inputs: "
                          "rename the head(s) to export")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return "sha256:" + digest.hexdigest()
