"""Watch mode on real components: the trainer, a real player process, CarRacing and TensorBoard.

`configs/carracing/pilotnet.yaml` trains 6 tiny batches on the session's small dataset with a
checkpoint every 3; the player drives each checkpoint 40 steps. The file stays well under a
minute on a 2-core machine.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from typer.testing import CliRunner

from conftest import PILOTNET, quick
from drivelab.cli import app
from drivelab.config import load_config
from drivelab.errors import DrivelabError
from drivelab.media import read_mp4
from drivelab.runs.folder import RunFolder
from drivelab.runs.metrics import read_metrics
from drivelab.train import train
from drivelab.train.loop import TrainLoop
from drivelab.watch.spec import WatchError, WatchOptions, read_watch_rows

CONFIG = PILOTNET


def overrides(dataset: Path, *extra: str) -> list[str]:
    return quick(
        dataset,
        "train.checkpoint_every=3",
        "train.max_batches=6",
        *extra,
        batch_size=8,
    )


def test_watch_drives_each_checkpoint_and_logs_it(small_dataset: Path, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    # the CLI in-process (the player is a real process all the same): no second interpreter start
    result = CliRunner().invoke(app, ["train", str(CONFIG), *overrides(small_dataset), "--runs", str(runs),
                                      "--no-progress", "--watch-every", "3", "--watch-steps", "40"])
    assert result.exit_code == 0, result.output
    assert "watched batches 3, 6" in " ".join(result.output.split())
    run = RunFolder(runs / "carracing_pilotnet" / "carracing_pilotnet_v1")

    # watch.jsonl: one row per checkpoint at a multiple of 3, written by the player alone
    rows = read_watch_rows(run)
    assert [r["batch"] for r in rows] == [3, 6]
    for row in rows:
        assert 0.0 <= row["watch/score"] <= row["watch/completion"] <= 1.0
        assert isinstance(row["watch/reward"], float) and row["watch/steps"] == 40
        assert row["watch/seed"] == 10_000 and row["period"] == 1
        frames, _ = read_mp4(run.path / row["watch/video"])
        assert row["watch/video"] == f"watch/batch_{row['batch']}.mp4" and len(frames) == 20
    # read_metrics merges them after the train (and val) rows of the same batch
    merged = read_metrics(run.metrics_path)
    assert [r["batch"] for r in merged if "watch/score" in r] == [3, 6]
    assert [r["batch"] for r in merged][-1] == 6 and "watch/score" in merged[-1]
    assert not any("watch/score" in json.loads(line) for line in run.metrics_path.read_text().splitlines())

    # TensorBoard: the player's own writer under tb/watch, scalars and the video at the batch
    events = EventAccumulator(str(run.tb / "watch"))
    events.Reload()
    for tag in ("watch/score", "watch/reward", "watch/completion"):
        assert [e.step for e in events.Scalars(tag)] == [3, 6], tag
    assert [e.value for e in events.Scalars("watch/score")] == pytest.approx([r["watch/score"] for r in rows])
    videos = events.Images("watch/video")
    assert [v.step for v in videos] == [3, 6] and videos[0].encoded_image_string[:6] == b"GIF89a"
    trainer_files = {p.name for p in run.tb.glob("events.out.tfevents.*")}
    player_files = {p.name for p in (run.tb / "watch").glob("events.out.tfevents.*")}
    assert trainer_files and player_files and not trainer_files & player_files
    trainer_events = EventAccumulator(str(run.tb))
    trainer_events.Reload()
    assert "loss" in trainer_events.Tags()["scalars"]
    assert not any(t.startswith("watch/") for t in trainer_events.Tags()["scalars"])

    (period,) = run.read_periods()
    assert period["watched"] is True and period["status"] == "finished"
    assert period["watch"] == {"every": 3, "max_steps": 40, "seed": 10_000, "env": "carracing",
                               "watched_batches": [3, 6]}
    assert "done" in (run.path / "watch" / "player.log").read_text()


def test_a_crashing_player_does_not_stop_training(small_dataset: Path, tmp_path: Path) -> None:
    result = train(load_config(CONFIG, overrides(small_dataset)), runs_root=tmp_path / "runs",
                   watch=WatchOptions(every=3, max_steps=20, env="NoSuchEnv-v0", poll_s=0.2))
    run = result.run
    assert result.batches == 6 and run.read_status()["status"] == "finished"
    assert result.watch_note is not None and "\n" not in result.watch_note
    assert "exited with code 1" in result.watch_note and "NoSuchEnv" in result.watch_note
    assert result.watch is not None
    assert result.watch["missed"] == [3, 6] and result.watch["watched_batches"] == []
    assert run.read_periods()[0]["watched"] is True


def test_a_failed_period_is_watched_and_a_resume_watches_only_its_own_checkpoints(
    small_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = load_config(CONFIG, overrides(small_dataset))
    step = TrainLoop._step

    def failing_step(self: TrainLoop, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        if self.batches_done == 4:
            raise RuntimeError("injected failure in batch 5")
        return step(self, batch)

    watch = WatchOptions(every=3, max_steps=20, poll_s=0.2)
    monkeypatch.setattr(TrainLoop, "_step", failing_step)
    with pytest.raises(RuntimeError, match="injected"):
        train(cfg, runs_root=tmp_path / "runs", watch=watch)
    run = RunFolder(tmp_path / "runs" / "carracing_pilotnet" / "carracing_pilotnet_v1")
    assert run.read_status()["status"] == "failed"
    assert [r["batch"] for r in read_watch_rows(run)] == [3]  # the failed period's checkpoint

    monkeypatch.setattr(TrainLoop, "_step", step)
    resumed = train(cfg, runs_root=tmp_path / "runs", resume=run.path, watch=watch)
    assert resumed.watch_note is None
    assert [r["batch"] for r in read_watch_rows(run)] == [3, 6]
    periods = run.read_periods()
    assert [(p["status"], p["watched"]) for p in periods] == [("failed", True), ("finished", True)]
    assert periods[0]["watch"]["watched_batches"] == [3] and periods[1]["watch"]["watched_batches"] == [6]


def test_watch_settings_are_checked_before_a_run_exists(small_dataset: Path, tmp_path: Path) -> None:
    with pytest.raises(WatchError, match=r"train\.checkpoint_every=3"):
        train(load_config(CONFIG, overrides(small_dataset)), runs_root=tmp_path / "runs",
              watch=WatchOptions(every=4))
    assert not (tmp_path / "runs").exists()
    runner = CliRunner()
    for flags, message in (
        (["--watch-every", "0"], "--watch-every must be at least 1 batch (got 0)"),
        (["--watch-every", "3", "--watch-steps", "0"], "--watch-steps must be at least 1 (got 0)"),
        (["--watch-steps", "40"], "--watch-steps and --watch-seed need --watch-every N"),
    ):
        result = runner.invoke(app, ["train", str(CONFIG), *overrides(small_dataset), "--runs",
                                     str(tmp_path / "runs"), *flags])
        assert isinstance(result.exception, DrivelabError) and str(result.exception) == message
    assert not (tmp_path / "runs").exists()


def test_player_spec_round_trips_through_argv(tmp_path: Path) -> None:
    """The trainer writes the player's command line and the player reads it with the same code."""
    from drivelab.watch.spec import PlayerSpec

    spec = PlayerSpec(run=tmp_path / "run", every=4, env="CarRacing-v3", max_steps=30, seed=10_003,
                      period=2, after=8, last=20, poll_s=0.5)
    assert PlayerSpec.from_argv(spec.to_argv(), prog="player", description="") == spec
    by_hand = PlayerSpec.from_argv([str(tmp_path), "--every", "5"], prog="player", description="")
    defaults = WatchOptions(every=5)
    assert (by_hand.max_steps, by_hand.seed, by_hand.poll_s) == (defaults.max_steps, defaults.seed, defaults.poll_s)
    assert WatchOptions.given(5, max_steps=None, seed=None) == defaults
    assert WatchOptions.given(5, seed=3).seed == 3
    with pytest.raises(SystemExit):  # --every is required
        PlayerSpec.from_argv([str(tmp_path)], prog="player", description="")
