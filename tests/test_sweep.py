"""`drivelab sweep` on a real local Ray: grid x seeds, a NaN trial, kill -9 of the driver, resume.

One Ray start for the module (num_cpus=2, a small object store); the killed sweep runs its own
Ray in a subprocess, as a user's would.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from conftest import PILOTNET, run_cli_here

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def local_ray():
    from drivelab.sweep.engine import start_ray

    assert start_ray(None, 1, num_cpus=2, object_store=80 * 1024 * 1024)
    yield
    ray.shutdown()


def test_workers_run_at_normal_priority(local_ray: None) -> None:
    """Ray would start them at niceness 15: trials would yield their cores to any other job."""

    @ray.remote(num_cpus=1)
    def niceness() -> int:
        return os.nice(0)

    assert ray.get(niceness.remote()) == os.nice(0)


def test_shipped_study_specs_plan() -> None:
    from drivelab.sweep.spec import plan_sweep, read_spec

    studies = sorted((PILOTNET.parents[1] / "studies").glob("*.yaml"))
    assert {p.stem for p in studies} >= {"normalization", "dataset_size", "balancing"}
    for path in studies:
        spec, _ = read_spec(path)
        plan = plan_sweep(spec, ["data.path=/data/any.zarr"])
        assert len(plan.trials) == len(plan.cells) * 3 >= 12, path


def write_spec(folder: Path, dataset: Path, **changes: object) -> Path:
    spec = {
        "name": "tiny",
        "base": str(PILOTNET),
        "overrides": {
            "data.path": str(dataset), "data.input_size": [64, 64], "data.workers": 0,
            "train.batch_size": 8, "train.max_batches": 30, "train.val_every": 10,
            "train.checkpoint_every": 10, "train.log_every": 5, "train.warmup_batches": 0,
        },
        "grid": {"train.lr": [0.001, 1.0e9], "data.normalization": ["none", "shifted"]},
        "seeds": 2,
        "trial": {"cpus": 1},
        "max_concurrent": 2,
        **changes,
    }
    path = folder / "sweep.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def ledger(folder: Path) -> dict[str, dict]:
    records = {}
    for path in (folder / "trials").glob("*.json"):
        with contextlib.suppress(json.JSONDecodeError):
            records[path.stem] = json.loads(path.read_text())
    return records


def file_times(run: Path) -> dict[str, float]:
    return {str(p.relative_to(run)): p.stat().st_mtime_ns for p in run.rglob("*") if p.is_file()}


def test_spec_mistakes_are_one_line_before_ray(tmp_path: Path, small_dataset: Path) -> None:
    cases = {
        "cell lr-fast: train.lr": {"grid": {"train.lr": ["fast"]}},
        "grdi: unknown key": {"grdi": {}},
        "nothing varies": {"grid": {}},
        "a driving metric": {"metric": {"name": "score", "mode": "max"}},
        "seeds repeat": {"seeds": [1, 1]},
    }
    for expected, change in cases.items():
        spec = write_spec(tmp_path, small_dataset, **change)
        result = run_cli_here("sweep", str(spec), "--out", str(tmp_path / "out"))
        assert result.returncode == 2, (expected, result.stderr)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error:"), (expected, result.stderr)
        assert expected in lines[0], (expected, lines[0])
        assert not (tmp_path / "out").exists()  # refused before any folder or Ray
    bad_cell = write_spec(tmp_path, small_dataset, grid={"train.optimizer": ["adam", "adamw2"]})
    result = run_cli_here("sweep", str(bad_cell), "--out", str(tmp_path / "out"))
    assert result.returncode == 2 and "cell optimizer-adamw2" in result.stderr, result.stderr
    assert run_cli_here("sweep", "--status", str(tmp_path)).returncode == 2


def test_max_frames_keeps_whole_first_episodes(small_dataset: Path) -> None:
    from drivelab.data.loader import EpisodeFrameDataset
    from drivelab.data.records import DatasetError
    from drivelab.data.store import DatasetStore

    store = DatasetStore.open(small_dataset)
    episodes = store.split_episodes("train")
    first = episodes[0].length
    whole = EpisodeFrameDataset(store, "train", ["steering"])
    capped = EpisodeFrameDataset(store, "train", ["steering"], max_frames=first + 1)
    assert len(whole) == sum(e.length for e in episodes) > len(capped) == first
    assert [e.index for e in capped.episodes] == [episodes[0].index]
    with pytest.raises(DatasetError, match=r"data\.max_frames=5 is below the first episode"):
        EpisodeFrameDataset(store, "train", ["steering"], max_frames=5)


def test_sweep_survives_kill_and_resumes(tmp_path: Path, small_dataset: Path, local_ray: None) -> None:
    from drivelab.sweep.runner import reopen_sweep, run_sweep

    spec = write_spec(tmp_path, small_dataset)
    out = tmp_path / "sweep"
    driver = subprocess.Popen(
        [sys.executable, "-m", "drivelab.cli", "sweep", str(spec), "--out", str(out)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "SDL_VIDEODRIVER": "dummy"}, start_new_session=True,
    )
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and driver.poll() is None:
        if any(r.get("status") == "finished" for r in ledger(out).values()):
            break
        time.sleep(0.3)
    assert driver.poll() is None, f"the sweep ended before it could be killed: {driver.stderr.read()}"
    driver.send_signal(signal.SIGKILL)
    driver.wait(timeout=30)
    time.sleep(3)  # Ray's processes share the driver's fate; let them go
    before = ledger(out)
    finished = {name: r for name, r in before.items() if r["status"] == "finished"}
    assert finished, before
    assert sum(r["status"] in ("finished", "failed") for r in before.values()) < 8  # work left
    kept = {name: file_times(Path(r["run"])) for name, r in finished.items()}
    checkpointed = {
        name: Path(r["run"]) for name, r in before.items()
        if r["status"] == "running" and list(Path(r["run"]).glob("checkpoints/batch_*.safetensors"))
    }

    plan, folder = reopen_sweep(out)
    run_sweep(plan, folder, resume=True)

    after = ledger(out)
    assert len(after) == 8
    assert sorted(r["status"] for r in after.values()) == ["failed"] * 4 + ["finished"] * 4, {
        name: (r["status"], r.get("reason")) for name, r in after.items()
    }
    for name, times in kept.items():  # finished trials untouched: same files, same mtimes
        assert after[name] == finished[name]
        assert file_times(Path(finished[name]["run"])) == times
    for name, run in checkpointed.items():  # continued from its own checkpoint: a second period
        periods = json.loads((run / "periods.json").read_text())
        assert len(periods) == 2 and periods[1]["first_batch"] > 0, (name, periods)
    for record in after.values():
        if record["status"] == "failed":
            assert "non-finite loss" in record["reason"] and "1e9" in record["cell"]
        else:
            assert record["result"]["batches"] == 30 and record["result"]["val/loss"] > 0
    table = (out / "results.md").read_text()
    assert "★ **normalization-" in table and "(n=2)" in table and " ± " in table
    rows = {c["cell"]: c for c in json.loads((out / "results.json").read_text())["cells"]}
    loss = rows["normalization-none_lr-0.001"]["metrics"]["val/loss"]
    assert loss["n"] == 2 and loss["std"] >= 0 and rows["normalization-none_lr-1e9"]["failed"] == 2
    assert (out / "figures" / "val_loss.png").stat().st_size > 1000
    status = run_cli_here("sweep", "--status", str(out))
    assert status.returncode == 0 and "8 done (4 failed), 0 running, 0 pending" in status.stdout
    again = run_cli_here("sweep", str(spec), "--out", str(out))
    assert again.returncode == 2 and "--resume" in again.stderr  # a sweep folder is never clobbered


def test_one_seed_cells_claim_no_spread() -> None:
    """A cell of one seed has no spread: shown as "± ?", and no gap to it is called beyond the
    spread (its std was 0.000 once, so any difference "exceeded" it)."""
    from drivelab.sweep.results import CellResult, exceeds_spread, spread_verdict

    one = CellResult("one", {}, numbers={"score": [0.90]})
    best = CellResult("best", {}, numbers={"score": [0.99]})
    three = CellResult("three", {}, numbers={"score": [0.50, 0.52, 0.51]})
    tight = CellResult("tight", {}, numbers={"score": [0.98, 0.99, 1.00]})
    assert exceeds_spread(one.mean_std("score"), best.mean_std("score")) is None
    assert "spread unknown" in spread_verdict(one.mean_std("score"), tight.mean_std("score"))
    assert exceeds_spread(three.mean_std("score"), tight.mean_std("score")) is True
    assert spread_verdict(three.mean_std("score"), tight.mean_std("score")).endswith("exceeds spread")
    from drivelab.sweep import results

    assert results._pm(one.mean_std("score")) == "0.900 ± ? (n=1)"
    assert results._pm(three.mean_std("score")) == "0.510 ± 0.010 (n=3)"
