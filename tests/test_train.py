"""The trainer on real CarRacing data: learning, run folders, logs, resume, failures, DDP.

Everything trains `configs/carracing/pilotnet.yaml` made tiny with overrides (64x64 input, a few
dozen batches) on the session's small real dataset, so the whole file stays well under a few
minutes on a 2-core machine.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from typer.testing import CliRunner

from conftest import PILOTNET, quick, run_cli, run_cli_here
from drivelab.cli import app
from drivelab.config import ConfigError, ExperimentConfig, HeadConfig, load_config
from drivelab.errors import DrivelabError
from drivelab.models.objectives import Objective
from drivelab.runs.checkpoints import list_checkpoints, load_weights
from drivelab.runs.folder import RunError, RunFolder, resolve_checkpoint
from drivelab.runs.metrics import read_metrics
from drivelab.train import LRSchedule, TrainingStopped, build_schedule, train

CONFIG = PILOTNET


def tiny(dataset: Path, *extra: str) -> list[str]:
    """Overrides that make the CarRacing PilotNet config train in seconds on a CPU."""
    return quick(
        dataset,
        "train.log_every=5",
        *extra,
        batch_size=16,
    )


def config_for(dataset: Path, *extra: str) -> ExperimentConfig:
    return load_config(CONFIG, tiny(dataset, *extra))


def run_folders(root: Path) -> list[Path]:
    return sorted(p for p in root.glob("*/*") if p.is_dir()) if root.exists() else []


# ---------------------------------------------------------------------------- learning + logs
def test_training_lowers_val_loss_and_writes_a_complete_run(small_dataset: Path, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    cfg = config_for(
        small_dataset,
        "train.max_batches=60",
        "train.warmup_batches=10",
        "train.schedule=constant",  # warmup, then the lr held (the shipped config decays by cosine)
        "train.log_every=1",
        "train.val_every=5",
        "train.checkpoint_every=30",
    )
    result = train(cfg, runs_root=runs)
    run = result.run
    assert run.path == runs / "carracing_pilotnet" / "carracing_pilotnet_v1"
    assert list_checkpoints(run.checkpoints) == [30, 60]
    assert run.read_status()["status"] == "finished" and run.is_valid()
    assert resolve_checkpoint(f"{run.path}@30")[1:] == (30, run.checkpoints / "batch_30.safetensors")
    assert resolve_checkpoint("carracing_pilotnet_v1", root=runs)[1] == 60  # name, latest
    with pytest.raises(RunError, match="no checkpoint at batch 45"):
        resolve_checkpoint(f"{run.path}@45")
    saved = load_config(run.config_path)  # fully resolved: the dataset's signal sizes written out
    assert saved.model.history.signal_sizes == {"speed": 1}
    assert saved.model_dump(exclude={"model": {"history"}}) == cfg.model_dump(exclude={"model": {"history"}})

    rows = read_metrics(run.metrics_path)
    train_rows = [r for r in rows if "loss" in r]
    val_rows = [r for r in rows if "val/loss" in r]
    assert [r["batch"] for r in train_rows] == list(range(1, 61))
    for name in ("loss", "steering_loss", "steering_mean_absolute_error", "accel_brake_loss",
                 "accel_brake_mean_absolute_error", "lr", "samples_per_s", "data_wait_s",
                 "compute_s", "grad_norm"):
        assert all(math.isfinite(r[name]) for r in train_rows), name
    # warmup: batch b (1-based) trains at lr * b / 10 for the first 10 batches, then lr
    lr = cfg.train.lr
    assert [r["lr"] for r in train_rows[:12]] == pytest.approx(
        [lr * b / 10 for b in range(1, 11)] + [lr, lr]
    )
    # validation of the untrained policy at batch 0, then every 5 batches
    assert [r["batch"] for r in val_rows] == list(range(0, 61, 5))
    untrained, trained = val_rows[0]["val/loss"], val_rows[-1]["val/loss"]
    assert trained < 0.5 * untrained, f"val loss did not fall: {untrained:.4f} -> {trained:.4f}"
    early = sum(r["loss"] for r in train_rows[:10]) / 10
    late = sum(r["loss"] for r in train_rows[-10:]) / 10
    assert late < 0.5 * early, f"train loss did not fall: {early:.4f} -> {late:.4f}"

    periods = run.read_periods()
    assert len(periods) == 1 and periods[0]["first_batch"] == 0 and periods[0]["last_batch"] == 60
    assert periods[0]["watched"] is False and periods[0]["ended"]

    events = EventAccumulator(str(run.tb))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"loss", "steering_loss", "steering_mean_absolute_error", "accel_brake_loss",
            "accel_brake_mean_absolute_error", "lr", "samples_per_s", "val/loss",
            "val/steering_mean_absolute_error"} <= tags
    assert [e.step for e in events.Scalars("val/loss")] == list(range(0, 61, 5))

    # a second run of the same line is a new version; nothing is overwritten
    again = train(config_for(small_dataset, "train.max_batches=2", "train.val_every=null"), runs_root=runs)
    assert again.run.name == "carracing_pilotnet_v2"
    assert list_checkpoints(run.checkpoints) == [30, 60]


def test_epochs_limit_counts_whole_batches_of_the_train_split(small_dataset: Path, tmp_path: Path) -> None:
    cfg = config_for(small_dataset, "train.max_batches=null", "train.epochs=2", "data.val_split=null",
                     "train.checkpoint_every=1000")
    result = train(cfg, runs_root=tmp_path)
    per_epoch = result.run.read_status()["data"]["train_samples"] // 16
    assert result.batches == 2 * per_epoch
    assert list_checkpoints(result.run.checkpoints) == [2 * per_epoch]  # the end always checkpoints
    rows = read_metrics(result.run.metrics_path)
    assert rows[-1]["epoch"] == 2 and rows[0]["epoch"] == 0


def test_schedules_warm_up_then_follow_their_shape() -> None:
    warm = LRSchedule(0.01, "constant", warmup_batches=4)
    assert [warm(b) for b in range(6)] == pytest.approx([0.0025, 0.005, 0.0075, 0.01, 0.01, 0.01])
    step = LRSchedule(0.1, "step", warmup_batches=0, step_batches=10, gamma=0.5)
    assert [step(b) for b in (0, 9, 10, 25)] == pytest.approx([0.1, 0.1, 0.05, 0.025])
    cosine = LRSchedule(1.0, "cosine", warmup_batches=10, min_lr=0.0, total_batches=110)
    assert cosine(9) == pytest.approx(1.0)
    assert cosine(60) == pytest.approx(0.5)
    assert cosine(110) == pytest.approx(0.0, abs=1e-12)
    cfg = load_config(CONFIG, ["train.schedule={name: step, every: 100, gamma: 0.1}",
                               "train.warmup_batches=50"])
    built = build_schedule(cfg.train, total_batches=1000)
    assert built(0) == pytest.approx(cfg.train.lr / 50)
    assert built(149) == pytest.approx(cfg.train.lr)
    assert built(150) == pytest.approx(cfg.train.lr * 0.1)


def test_objective_classification_and_aux_terms() -> None:
    steering = HeadConfig(
        output="steering", kind="classification", bins=[-0.9, 0.0, 0.9], low=-0.9, high=0.9
    )
    accel = HeadConfig(output="accel_brake", loss="l1")
    objective = Objective([steering, accel], aux_weight=0.25)
    batch = {
        "target/steering": torch.tensor([[-0.8], [0.1], [0.6]]),
        "target/accel_brake": torch.tensor([[0.5], [0.0], [-1.0]]),
    }
    logits = torch.tensor([[5.0, 0.0, 0.0], [0.0, 5.0, 0.0], [0.0, 0.0, 5.0]])
    predictions = {
        "steering": logits,
        "accel_brake": torch.tensor([0.5, 0.5, -0.5]),
        "aux/steering": torch.zeros(3, 3),
        "aux/accel_brake": torch.zeros(3),
    }
    values = objective(predictions, batch).values
    # arg-max bins -0.9, 0.0, 0.9 against -0.8, 0.1, 0.6
    assert values["steering_mean_absolute_error"].item() == pytest.approx((0.1 + 0.1 + 0.3) / 3)
    assert values["accel_brake_loss"].item() == pytest.approx((0.0 + 0.5 + 0.5) / 3)
    ce = torch.nn.functional.cross_entropy(logits, torch.tensor([0, 1, 2]))
    assert values["steering_loss"].item() == pytest.approx(ce.item(), rel=1e-5)
    aux = math.log(3) + (0.5 + 0.0 + 1.0) / 3
    expected = ce.item() + 1 / 3 + 0.25 * aux
    assert values["loss"].item() == pytest.approx(expected, rel=1e-5)


# ---------------------------------------------------------------------------- resume
def test_resume_after_sigkill_is_bit_identical(small_dataset: Path, tmp_path: Path) -> None:
    n = 6
    overrides = tiny(
        small_dataset,
        f"train.max_batches={2 * n}",
        f"train.checkpoint_every={n}",
        "train.val_every=4",
        "train.warmup_batches=4",
        "data.normalization=scaled",
        "data.crop={top: 4, bottom: 12, left: 2, right: 2}",
        "model.heads.steering.kind=classification",
        "model.heads.steering.loss=null",
        "model.heads.steering.bins=[-1.0, -0.3, 0.0, 0.3, 1.0]",
    )
    cfg = load_config(CONFIG, overrides)
    straight = train(cfg, runs_root=tmp_path / "straight")

    runs = tmp_path / "killed"
    proc = subprocess.Popen(
        [sys.executable, "-m", "drivelab.cli", "train", str(CONFIG), *overrides,
         "--runs", str(runs), "--no-progress"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env={**os.environ, "SDL_VIDEODRIVER": "dummy"},
    )
    killed = RunFolder(runs / "carracing_pilotnet" / "carracing_pilotnet_v1")
    deadline = time.monotonic() + 120
    while not (killed.checkpoints / f"batch_{n}.safetensors").exists():
        assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
        assert time.monotonic() < deadline, "checkpoint N never landed"
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert list_checkpoints(killed.checkpoints) == [n], "the run finished before the kill"

    resumed = train(cfg, runs_root=runs, resume=killed.path)
    assert resumed.run.path == killed.path and resumed.first_batch == n
    a = load_weights(straight.run.checkpoints / f"batch_{2 * n}.safetensors")
    b = load_weights(killed.checkpoints / f"batch_{2 * n}.safetensors")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    events = EventAccumulator(str(killed.tb))
    events.Reload()
    steps = [e.step for e in events.Scalars("loss")]
    assert steps == sorted(set(steps)) and steps[-1] == 2 * n, steps  # killed tail purged once
    periods = killed.read_periods()
    assert [p["status"] for p in periods] == ["killed", "finished"]
    assert (periods[1]["first_batch"], periods[1]["last_batch"]) == (n, 2 * n)

    # a changed config is refused, naming the keys, and the run is left as it was
    changed = load_config(CONFIG, [*overrides, "train.lr=0.01", "model.neck=[64]"])
    with pytest.raises(RunError, match=r"train\.lr") as refused:
        train(changed, runs_root=runs, resume=killed.path)
    assert "model.neck.0" in str(refused.value)
    assert len(killed.read_periods()) == 2
    with pytest.raises(RunError, match="already trained"):
        train(cfg, runs_root=runs, resume=killed.path)


# ---------------------------------------------------------------------------- failures
def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(small_dataset: Path, tmp_path: Path) -> None:
    cfg = config_for(
        small_dataset,
        "train.optimizer=sgd",
        "train.lr=100000000",
        "train.grad_clip=null",
        "train.max_batches=30",
        "train.checkpoint_every=1",
        "train.val_every=null",
    )
    with pytest.raises(TrainingStopped, match=r"non-finite loss at batch (\d+)") as stopped:
        train(cfg, runs_root=tmp_path)
    bad = int(stopped.value.args[0].split("at batch ")[1].split()[0])
    run = RunFolder(tmp_path / "carracing_pilotnet" / "carracing_pilotnet_v1")
    kept = list_checkpoints(run.checkpoints)
    assert kept and max(kept) < bad, (kept, bad)
    assert f"batch_{max(kept)}" in str(stopped.value)
    assert all(torch.isfinite(t).all() for t in load_weights(run.checkpoints / f"batch_{max(kept)}.safetensors").values())
    status = run.read_status()
    assert status["status"] == "failed" and "non-finite" in status["error"]
    assert run.read_periods()[-1]["status"] == "failed"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["data.val_split=test"], r"no 'test' episodes to validate on"),
        (["model.history.signals=[wheel_speed]"], r"model\.history\.signals: wheel_speed not recorded"),
        (["model.history.signals=[purpose]", "model.history.signal_sizes={purpose: 1}"],
         r"signal_sizes\.purpose: 1, but .* records 2"),
        (["data.crop={top: 50, bottom: 46}"], r"data\.crop .* leaves nothing of the dataset's 96x96"),
        (["train.batch_size=4096"], r"fewer than one batch"),
    ],
)
def test_bad_input_is_one_error_and_leaves_no_run(
    small_dataset: Path, tmp_path: Path, extra: list[str], message: str
) -> None:
    with pytest.raises(DrivelabError, match=message):
        train(config_for(small_dataset, "train.max_batches=2", *extra), runs_root=tmp_path)
    assert run_folders(tmp_path) == []


def test_config_errors_are_drivelab_errors() -> None:
    with pytest.raises(ConfigError, match=r"train\.lr") as bad:
        load_config(CONFIG, ["train.lr=-1"])
    assert isinstance(bad.value, DrivelabError)


def test_out_of_memory_names_the_batch_size(
    small_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import drivelab.train.trainer as trainer

    real_build = trainer.build_policy

    def build_oom(*args: Any, **kwargs: Any) -> torch.nn.Module:
        policy = real_build(*args, **kwargs)

        def forward(frames: torch.Tensor, history: torch.Tensor | None = None) -> dict:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 9.00 GiB")

        policy.forward = forward
        return policy

    monkeypatch.setattr(trainer, "build_policy", build_oom)
    with pytest.raises(TrainingStopped, match=r"batch 1 ran out of memory .* try train\.batch_size=8"):
        train(config_for(small_dataset, "train.max_batches=3", "data.val_split=null"), runs_root=tmp_path)
    assert run_folders(tmp_path) == []  # failed before its first checkpoint: removed


def test_cli_reports_bad_input_in_one_line(small_dataset: Path, tmp_path: Path) -> None:
    result = run_cli_here("train", str(CONFIG), *tiny(small_dataset, "data.val_split=test"),
                     "--runs", str(tmp_path / "runs"), "--no-progress")
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and "--val-episodes" in lines[0]
    assert run_folders(tmp_path / "runs") == []


# ---------------------------------------------------------------------------- DDP
def test_ddp_on_two_cpu_processes(small_dataset: Path, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    result = run_cli(
        "train", str(CONFIG),
        *tiny(small_dataset, "train.max_batches=4", "train.checkpoint_every=2", "train.val_every=2",
              "train.batch_size=8", "train.strategy=ddp", "train.devices=2", "train.accelerator=cpu"),
        "--runs", str(runs), "--no-progress",
        timeout=240,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.count("trained ") == 1  # rank 0 reports, once
    (run_path,) = run_folders(runs)
    run = RunFolder(run_path)
    (period,) = run.read_periods()
    assert period["world_size"] == 2
    ranks = period["ranks"]
    assert [r["rank"] for r in ranks] == [0, 1]
    assert ranks[0]["pid"] != ranks[1]["pid"]
    assert all(r["batches"] == 4 and r["samples"] == 32 for r in ranks)
    assert sorted(p.name for p in run.checkpoints.iterdir()) == [
        "batch_2.safetensors", "batch_2.state.pt", "batch_4.safetensors", "batch_4.state.pt",
    ]
    rows = read_metrics(run.metrics_path)
    assert [r["batch"] for r in rows if "val/loss" in r] == [0, 2, 4]
    assert json.loads(run.status_path.read_text())["status"] == "finished"


# ---------------------------------------------------------------------------- summary
def test_summary_verb_prints_keras_counts(small_dataset: Path) -> None:
    runner = CliRunner()
    plain = runner.invoke(app, ["summary", str(CONFIG), "--no-shapes"])
    assert plain.exit_code == 0, plain.output
    assert "Total params:" in plain.output and "Non-trainable params:" in plain.output
    with_data = runner.invoke(
        app, ["summary", str(CONFIG), "data.input_size=[64,64]", "model.history.signals=[speed,purpose]",
              "--dataset", str(small_dataset)]
    )
    assert with_data.exit_code == 0, with_data.output
    assert "dataset 96x96x3" in with_data.output and "resized to 64x64" in with_data.output
    assert "history [B, 4, 3]" in with_data.output  # purpose has 2 values per step in the data
    assert "Trainable params:" in with_data.output


def test_the_progress_bar_ends_on_the_values_the_summary_prints(small_dataset: Path, tmp_path: Path) -> None:
    """The last numbers a user sees on the bar are the run's last train loss and final val loss."""

    class Recorder:
        def __init__(self) -> None:
            self.shown: list[dict[str, float]] = []

        def start(self, total: int, done: int) -> None: ...

        def advance(self, done: int) -> None: ...

        def show(self, values: dict[str, float]) -> None:
            self.shown.append(dict(values))

        def close(self) -> None: ...

    bar = Recorder()
    result = train(config_for(small_dataset, "train.max_batches=6", "train.val_every=4", "train.log_every=2"),
                   runs_root=tmp_path, progress=bar)
    assert bar.shown[-1]["val/loss"] == pytest.approx(result.val_values["val/loss"])
    assert bar.shown[-1]["loss"] == pytest.approx(result.train_values["loss"])
