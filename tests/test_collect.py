"""Expert collection on the real CarRacing simulator, through the library and the command line."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import run_cli, run_cli_here
from drivelab.data.collect import CollectPlan, collect
from drivelab.data.inspect import verify_dataset
from drivelab.data.store import DatasetStore


def test_dataset_depends_on_seed_not_worker_count(tmp_path: Path) -> None:
    plan = CollectPlan(env="carracing", seed=3, noise=0.3, max_steps=40)
    one = collect(tmp_path / "one.zarr", plan, episodes=2, workers=1)
    two = collect(tmp_path / "two.zarr", plan, episodes=2, workers=2)
    assert one.indices == two.indices == [0, 1]
    a, b = DatasetStore.open(one.path), DatasetStore.open(two.path)
    for i in (0, 1):
        ga, gb = a.episode(i), b.episode(i)
        np.testing.assert_array_equal(ga["frames"][:], gb["frames"][:])
        np.testing.assert_array_equal(ga["actions/steering"][:], gb["actions/steering"][:])
        np.testing.assert_array_equal(ga["perturbed"][:], gb["perturbed"][:])
        assert ga.attrs["track_seed"] == 3 + i
    assert a.episode(0)["perturbed"][:].any(), "noise 0.3 should perturb some steps"


def test_small_dataset_content(small_dataset: Path) -> None:
    store = DatasetStore.open(small_dataset)
    eps = store.episodes()
    assert [e.index for e in eps] == [0, 1, 2]
    assert store.split_of(2) == "val" and store.split_of(0) == "train"
    g = store.episode(0)
    t = eps[0].length
    assert g["frames"].shape == (t, 96, 96, 3)
    # telemetry holds the previously *executed* controls, never the current label
    assert g["telemetry/steering"][0, 0] == 0.0
    assert set(g["telemetry"].array_keys()) >= {"speed", "steering", "accel_brake", "progress", "purpose"}
    assert g["telemetry/purpose"].shape == (t, 2)
    assert verify_dataset(store).ok


def test_append_continues_indices_and_tracks(tmp_path: Path) -> None:
    plan = CollectPlan(env="carracing", seed=10, max_steps=20)
    out = tmp_path / "d.zarr"
    collect(out, plan, episodes=1)
    summary = collect(out, plan, episodes=2, append=True, test_episodes=1)
    store = DatasetStore.open(out)
    assert summary.indices == [1, 2]
    assert [e.attrs["track_seed"] for e in store.episodes()] == [10, 11, 12]
    assert store.split_of(2) == "test"


def test_cli_collect_info_plot(tmp_path: Path) -> None:
    out = tmp_path / "d.zarr"
    r = run_cli("collect", "--episodes", "2", "--workers", "2", "--seed", "1", "--max-steps",
                "30", "--out", str(out))
    assert r.returncode == 0, r.stderr
    r = run_cli_here("data", "info", str(out), "--json", "-", "--plot", str(tmp_path / "h.png"))
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["episodes"] == 2 and info["frames"] == 60
    assert info["splits"]["train"]["episodes"] == 2
    steer = info["signals"]["actions"]["steering"]
    assert -1.0 <= steer["min"][0] <= steer["max"][0] <= 1.0
    assert len(info["frame_stats"]["mean"]) == 3
    png = (tmp_path / "h.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    r = run_cli_here("data", "verify", str(out))
    assert r.returncode == 0 and "2 committed episodes" in r.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["collect", "--episodes", "0", "--out", "{tmp}/x.zarr"], "--episodes must be at least 1"),
        (["collect", "--env", "NoSuchEnv-v9", "--out", "{tmp}/x.zarr"], "NoSuchEnv-v9"),
        (["collect", "--env", "CartPole-v1", "--out", "{tmp}/x.zarr"], "image observations"),
        (["collect", "--out", "{tmp}/existing"], "already exists"),
        (["collect", "--append", "--out", "{tmp}/missing.zarr"], "does not exist"),
        (["data", "info", "{tmp}/existing"], "not a drivelab dataset"),
        (["data", "verify", "{tmp}/missing.zarr"], "does not exist"),
    ],
)
def test_cli_bad_input_is_one_clear_line(tmp_path: Path, args: list[str], message: str) -> None:
    existing = tmp_path / "existing"
    existing.mkdir()
    (existing / "keep.txt").write_text("precious")
    r = run_cli_here(*[a.format(tmp=tmp_path) for a in args])
    assert r.returncode == 2, (r.stdout, r.stderr)
    lines = [ln for ln in r.stderr.strip().splitlines() if ln.strip()]
    assert lines and lines[-1].startswith("error:") and message in r.stderr, r.stderr
    assert "Traceback" not in r.stderr
    assert (existing / "keep.txt").read_text() == "precious"
    assert not (tmp_path / "x.zarr").exists() and not (tmp_path / "missing.zarr").exists()


def test_sigkill_mid_episode_keeps_committed_episodes(tmp_path: Path) -> None:
    """Kill the whole collector (parent + worker) mid-episode: what was committed stays intact."""
    out = tmp_path / "d.zarr"
    proc = subprocess.Popen(
        [sys.executable, "-m", "drivelab.cli", "collect", "--episodes", "6", "--workers", "1",
         "--max-steps", "150", "--seed", "5", "--out", str(out)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env={**os.environ, "SDL_VIDEODRIVER": "dummy"}, start_new_session=True,
    )
    try:
        deadline = time.time() + 180
        store = None
        while time.time() < deadline:
            if (out / "zarr.json").exists():
                store = DatasetStore.open(out)
                if len(store.episodes()) >= 2:
                    break
            time.sleep(0.05)
        assert store is not None and len(store.episodes()) >= 2, "collector too slow"
        # readable while being written: a committed episode reads back whole
        first = store.episode(0)
        assert first["frames"][:].shape[0] == store.episodes()[0].length
        time.sleep(0.4)  # well inside the next episode
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    store = DatasetStore.open(out)
    committed = store.episodes()
    assert 2 <= len(committed) < 6
    report = verify_dataset(store)
    assert report.ok, report.problems
    assert report.frames == sum(e.length for e in committed)
    r = run_cli_here("data", "verify", str(out))
    assert r.returncode == 0, r.stderr
    # the dataset can be appended to after the crash, continuing after every used index
    summary = collect(out, CollectPlan(env="carracing", seed=5, max_steps=10), episodes=1,
                      append=True)
    assert summary.indices[0] >= len(committed)
