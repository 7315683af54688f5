"""Offline metrics: a run's predictions scored on a recorded split, via the API and the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from conftest import run_cli_here
from drivelab.config import load_config
from drivelab.data.loader import EpisodeFrameDataset
from drivelab.data.records import DatasetMeta
from drivelab.data.store import DatasetStore
from drivelab.evaluate.offline import OfflineError, OfflineJob, offline_metrics
from drivelab.evaluate.runtime import PolicyRuntime
from drivelab.models.heads import action_to_bin
from drivelab.sim.base import SignalSpec
from drivelab.train import train

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "carracing" / "pilotnet.yaml"
QUICK = ["train.max_batches=4", "train.batch_size=8", "train.checkpoint_every=2", "data.workers=0"]
STEERING_BINS = (
    "model.heads=[{output: steering, kind: classification, widths: [], "
    "bins: {centres: [-0.9, 0.0, 0.9]}, low: -0.9, high: 0.9}]"
)


def _train(dataset: Path, root: Path, *extra: str) -> Path:
    return train(load_config(CONFIG, [f"data.path={dataset}", *QUICK, *extra]), runs_root=root).run.path


@pytest.fixture(scope="module")
def regression_run(small_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The default CarRacing PilotNet (steering + accel_brake regression, speed history)."""
    return _train(small_dataset, tmp_path_factory.mktemp("runs"))


@pytest.fixture(scope="module")
def classification_run(small_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same with kkelchte's discrete steering: 3 bins -0.9 / 0 / 0.9, cross-entropy."""
    return _train(small_dataset, tmp_path_factory.mktemp("runs"), STEERING_BINS)


def _val_predictions(run: Path, store: DatasetStore) -> tuple[dict, dict]:
    """The policy's raw outputs on every val sample at once, computed without the offline code."""
    runtime = PolicyRuntime.from_ref(str(run))
    hist = runtime.config.model.history
    ds = EpisodeFrameDataset(store, "val", runtime.policy.outputs, frames=runtime.k,
                             history_signals=hist.signals, history_length=hist.length)
    batch = ds.__getitems__(list(range(len(ds))))
    with torch.inference_mode():
        predictions = runtime.policy(*runtime.pipeline(batch))
    return predictions, batch


def test_offline_metrics_equal_a_direct_computation(regression_run: Path, small_dataset: Path) -> None:
    report = offline_metrics(str(regression_run), "val", batch_size=5)  # several uneven batches
    predictions, batch = _val_predictions(regression_run, DatasetStore.open(small_dataset))
    n = batch["frames"].shape[0]
    assert report.samples == n and report.split == "val"
    total = 0.0
    for output in ("steering", "accel_brake"):
        error = predictions[output].double() - batch[f"target/{output}"][:, 0].double()
        scores = report.outputs[output]
        assert scores.kind == "regression" and scores.samples == n and scores.accuracy is None
        assert scores.mse == pytest.approx(error.square().mean().item(), rel=1e-5)
        assert scores.mae == pytest.approx(error.abs().mean().item(), rel=1e-5)
        assert scores.loss == pytest.approx(scores.mse, rel=1e-5)  # the config's loss is mse
        flat = report.metrics()
        assert flat[f"{output}_loss"] == scores.loss
        assert flat[f"{output}_mean_absolute_error"] == scores.mae
        total += scores.loss
    assert report.loss == pytest.approx(total, rel=1e-5)  # both heads weigh 1
    # scoring the same dataset named explicitly gives the same numbers
    again = offline_metrics(str(regression_run), "val", dataset=small_dataset)
    assert again.outputs["steering"].mse == pytest.approx(report.outputs["steering"].mse, rel=1e-5)


def test_classification_run_gets_accuracy_and_a_confusion_matrix(
    classification_run: Path, small_dataset: Path, tmp_path: Path
) -> None:
    out = tmp_path / "offline.json"
    r = run_cli_here("eval", str(classification_run), "--offline", "val", "--workers", "0",
                "--json", str(out))
    assert r.returncode == 0, r.stderr
    assert "steering confusion" in r.stdout and "accuracy" in r.stdout
    result = json.loads(out.read_text())
    steering = result["outputs"]["steering"]
    assert steering["kind"] == "classification" and steering["bins"] == [-0.9, 0.0, 0.9]
    confusion = torch.tensor(steering["confusion"])
    assert confusion.shape == (3, 3) and int(confusion.sum()) == result["samples"]
    assert steering["accuracy"] == pytest.approx(confusion.trace().item() / result["samples"])
    assert result["metrics"]["steering_loss"] == steering["loss"]  # cross-entropy
    predictions, batch = _val_predictions(classification_run, DatasetStore.open(small_dataset))
    truth = action_to_bin(batch["target/steering"][:, 0], [-0.45, 0.45])
    guess = predictions["steering"].argmax(dim=1)
    assert confusion.sum(dim=1).tolist() == torch.bincount(truth, minlength=3).tolist()
    assert confusion.sum(dim=0).tolist() == torch.bincount(guess, minlength=3).tolist()
    values = torch.tensor([-0.9, 0.0, 0.9])[guess].double()
    mae = (values - batch["target/steering"][:, 0].double()).abs().mean().item()
    assert steering["mae"] == pytest.approx(mae, rel=1e-5)


def test_a_split_the_dataset_lacks_is_one_error_line(regression_run: Path) -> None:
    r = run_cli_here("eval", str(regression_run), "--offline", "test")
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert "has no 'test' episodes (it has: train, val)" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_a_dataset_with_other_signals_is_refused(regression_run: Path, tmp_path: Path) -> None:
    def dataset(name: str, telemetry: tuple[str, ...], actions: tuple[str, ...]) -> Path:
        meta = DatasetMeta(env_id="other", fps=50.0, frame_shape=(96, 96, 3),
                           telemetry=tuple(SignalSpec(t) for t in telemetry),
                           actions=tuple(SignalSpec(a, low=-1.0, high=1.0) for a in actions))
        return DatasetStore.create(tmp_path / name, meta).path

    other_actions = dataset("actions.zarr", ("speed",), ("steer", "throttle"))
    with pytest.raises(OfflineError, match=r"no one-value action \['steering', 'accel_brake'\]"):
        OfflineJob(str(regression_run), "val", dataset=other_actions)
    no_speed = dataset("telemetry.zarr", ("gyro",), ("steering", "accel_brake"))
    with pytest.raises(OfflineError, match=r"lacks the history telemetry .* \(speed\[1\]"):
        OfflineJob(str(regression_run), "val", dataset=no_speed)
    with pytest.raises(OfflineError, match="a split is one of train, val, test"):
        OfflineJob(str(regression_run), "validation")
