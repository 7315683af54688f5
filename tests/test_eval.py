"""Closed-loop evaluation: metrics, baselines, the policy runtime, worker failures, the CLI."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import run_cli_here
from drivelab.data.loader import EpisodeFrameDataset
from drivelab.data.store import DatasetStore
from drivelab.evaluate.drivers import DriverSpec
from drivelab.evaluate.metrics import EpisodeTracker, aggregate, driving_score, finish_episode
from drivelab.evaluate.runner import evaluate
from drivelab.evaluate.runtime import PolicyLoadError, PolicyRuntime
from drivelab.media import read_mp4
from drivelab.sim import make_env
from drivelab.sim.base import Observation
from drivelab.workers import run_jobs

REPO = Path(__file__).resolve().parents[1]


def test_driving_score_penalties() -> None:
    assert driving_score(1.0, 0, 0) == 1.0
    assert driving_score(1.0, 1, 0) == pytest.approx(0.8)
    assert driving_score(0.5, 2, 1) == pytest.approx(0.5 * 0.8 * 0.8 * 0.6)
    t = EpisodeTracker(fps=50)
    for off in (False, True, True, False, True):
        t.update(1.0, {"off_track": off}, speed=10.0)
    row = finish_episode(3, t, {"unstuck_count": 1, "lap_complete": True}, completion=0.9)
    assert row.off_track_events == 2 and row.off_track_s == pytest.approx(3 / 50)
    assert row.score == pytest.approx(0.9 * 0.8**2 * 0.6, abs=1e-4)
    assert row.lap_time_s == pytest.approx(5 / 50)
    agg = aggregate([row, row])
    assert agg["score_std"] == 0.0 and agg["laps_finished"] == 2


def test_expert_beats_random_on_the_same_tracks() -> None:
    expert = evaluate(DriverSpec("expert"), [11, 12], workers=2, max_steps=250)
    rand = evaluate(DriverSpec("random"), [11, 12], workers=1, max_steps=250)
    assert [r.seed for r in expert.rows] == [11, 12]
    assert expert.complete and rand.complete
    assert expert.aggregate["completion_mean"] > 5 * rand.aggregate["completion_mean"]
    assert expert.aggregate["score_mean"] > rand.aggregate["score_mean"]
    assert expert.aggregate["off_track_events_mean"] == 0


@dataclass
class FlakyJob:
    """Fails on task 2 only: the pool must report it and finish the others."""

    def open(self) -> None:
        pass

    def run(self, task: int, report: Callable[[int], None]) -> int:
        if task == 2:
            raise ValueError("boom on 2")
        return task * 10

    def close(self) -> None:
        pass


def test_worker_failure_is_reported_and_others_continue() -> None:
    done: dict[int, int] = {}
    failed: list[tuple[int, str]] = []

    def on_error(task: int, message: str, _trace: str) -> bool:
        failed.append((task, message))
        return True

    run_jobs(FlakyJob(), [1, 2, 3, 4], workers=2, on_done=done.__setitem__, on_error=on_error)
    assert done == {1: 10, 3: 30, 4: 40}
    assert failed == [(2, "ValueError: boom on 2")]


@pytest.fixture(scope="module")
def tiny_run(small_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real (short) training run of the default CarRacing config with a speed history."""
    runs = tmp_path_factory.mktemp("runs")
    r = run_cli_here("train", str(REPO / "configs/carracing/pilotnet.yaml"), f"data.path={small_dataset}",
                "train.max_batches=6", "train.batch_size=8", "train.val_every=3",
                "train.checkpoint_every=3", "train.warmup_batches=2", "data.workers=0",
                "--runs", str(runs), "--no-progress")
    assert r.returncode == 0, r.stderr
    return next(runs.glob("*/*_v1"))


def test_runtime_sees_what_the_loader_gave(tiny_run: Path, small_dataset: Path) -> None:
    """Replaying a recorded episode through the runtime reproduces the training samples."""
    rt = PolicyRuntime.from_ref(str(tiny_run))
    store = DatasetStore.open(small_dataset)
    hist = rt.config.model.history
    ds = EpisodeFrameDataset(store, "train", ["steering"], frames=rt.k,
                             history_signals=hist.signals, history_length=hist.length)
    group = store.episode(0)
    frames = group["frames"][:]
    telemetry = {s: group[f"telemetry/{s}"][:] for s in hist.signals}
    rt.reset()
    for t in range(12):
        batch = rt.observe(Observation(frames[t], {s: v[t] for s, v in telemetry.items()}))
        sample = ds[t]
        assert torch.equal(batch["frames"][0], sample["frames"])
        assert torch.equal(batch["history"][0], sample["history"])


def test_policy_drives_and_reports_latency(tiny_run: Path) -> None:
    rt = PolicyRuntime.from_ref(f"{tiny_run}@6")
    env = make_env("carracing", max_steps=30)
    rt.check_env(env)
    obs = env.reset(seed=3)
    rt.reset()
    for _ in range(10):
        values = rt.act(obs)
        assert set(values) == {"steering", "accel_brake"}
        obs = env.step(np.array([values["steering"], values["accel_brake"]], np.float32)).observation
    env.close()
    assert len(rt.latencies_s) == 10 and all(s > 0 for s in rt.latencies_s)
    with pytest.raises(Exception, match="no checkpoint at batch 5"):
        PolicyRuntime.from_ref(f"{tiny_run}@5")


def test_cli_eval_policy_with_baseline(tiny_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "eval.json"
    r = run_cli_here("eval", str(tiny_run), "--episodes", "2", "--seed", "500", "--workers", "2",
                "--max-steps", "60", "--baseline", "expert", "--json", str(out),
                "--video", str(tmp_path / "videos"))
    assert r.returncode == 0, r.stderr
    result = json.loads(out.read_text())
    assert result["tracks"] == [500, 501]
    policy, expert = result["drivers"]
    assert expert["driver"] == "expert" and len(policy["episodes"]) == 2
    for key in ("reward_mean", "reward_std", "score_mean", "score_std", "completion_mean"):
        assert not math.isnan(policy["aggregate"][key])
    assert "score_ratio_to_expert" in policy["aggregate"]
    videos = sorted((tmp_path / "videos").glob("*.mp4"))  # H.264 MP4: an ISO box "ftyp" at byte 4
    assert len(videos) == 4 and videos[0].read_bytes()[4:8] == b"ftyp"
    frames, fps = read_mp4(videos[0])
    assert len(frames) == 30 and fps == 25  # every 2nd of 60 steps at CarRacing's 50 fps


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["eval"], "name a RUN"),
        (["eval", "--baseline", "human"], "--baseline 'human' is unknown"),
        (["eval", "{tmp}/nowhere"], "nowhere"),
    ],
)
def test_cli_eval_bad_input(tmp_path: Path, args: list[str], message: str) -> None:
    r = run_cli_here(*[a.format(tmp=tmp_path) for a in args])
    assert r.returncode == 2 and message in r.stderr and "Traceback" not in r.stderr, r.stderr


def test_runtime_refuses_mismatched_env(tiny_run: Path) -> None:
    rt = PolicyRuntime.from_ref(str(tiny_run))
    env = make_env("CarRacing-v3", generic=True, max_steps=10)
    with pytest.raises(PolicyLoadError, match="no action for"):
        rt.check_env(env)
    env.close()


def test_json_dash_puts_the_json_alone_on_stdout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`--json -` as Unix tools read it: stdout is the JSON document, the tables go to stderr."""
    monkeypatch.chdir(tmp_path)
    r = run_cli_here("eval", "--baseline", "random", "--episodes", "1", "--max-steps", "20", "--workers", "1",
                     "--json", "-")
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout)
    assert result["drivers"][0]["driver"] == "random" and "driving score" in r.stderr
    assert list(tmp_path.iterdir()) == []  # no file named "-"


def test_the_step_cap_is_said_with_the_scores(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A lap cut by --max-steps scores its completion only: the table and the JSON say so."""
    monkeypatch.chdir(tmp_path)
    r = run_cli_here("eval", "--baseline", "expert", "--episodes", "1", "--max-steps", "30", "--workers", "1",
                     "--json", "-")
    assert r.returncode == 0, r.stderr
    (expert,) = json.loads(r.stdout)["drivers"]
    assert expert["max_steps"] == 30 and expert["capped_episodes"] == 1
    assert "capped at 30 steps; 1 ended by the cap" in " ".join(r.stderr.split())
