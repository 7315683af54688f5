"""Issue 29, the sweep's items: a crafted Tune pickle, two drivers, relative paths, seeds, long names.

Every refusal is checked before Ray starts (a real sweep folder, real files, a real second
process holding the lock); one test runs a real local Ray end to end in a driver subprocess
(relative --out, a 300-character grid value, Ctrl-C, the printed hint, a relative --resume).
"""

from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from conftest import PILOTNET, run_cli, run_cli_here


@pytest.fixture(autouse=True)
def own_sweep_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """drivelab's per-user sealing key lives under XDG_CONFIG_HOME: the test's own, not ~/.config."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))


def write_spec(folder: Path, dataset: Path, **changes: object) -> Path:
    spec = {
        "name": "tiny",
        "base": str(PILOTNET),
        "overrides": {
            "data.path": str(dataset), "data.input_size": [64, 64], "data.workers": 0,
            "train.batch_size": 8, "train.max_batches": 10, "train.val_every": 5,
            "train.checkpoint_every": 5, "train.log_every": 5, "train.warmup_batches": 0,
        },
        "grid": {"train.lr": [0.001, 0.002]},
        "seeds": 1,
        "trial": {"cpus": 1},
        "max_concurrent": 1,
        **changes,
    }
    path = folder / "sweep.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def one_error_line(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
    return lines[0]


class Marker:
    """Unpickling this creates ``path``: what a crafted Tune state file could do, harmlessly."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple:
        return (open, (str(self.path), "w"))


def new_folder(tmp_path: Path, dataset: Path) -> Path:
    """A sweep folder as `drivelab sweep SPEC` makes it before Ray starts (spec, trials/, runs/)."""
    from drivelab.sweep.runner import new_sweep

    _, folder = new_sweep(write_spec(tmp_path, dataset), [], tmp_path / "sweep")
    return folder.path


# ---------------------------------------------------------------- item 2: Tune's pickles
def test_a_crafted_tune_pickle_is_refused_before_it_is_unpickled(tmp_path: Path, small_dataset: Path) -> None:
    from drivelab.sweep.trust import CHECKSUMS, record

    ray = pytest.importorskip("ray")
    out = new_folder(tmp_path, small_dataset)
    experiment = out / "tune" / "tune"
    experiment.mkdir(parents=True)
    marker = tmp_path / "pwned"
    crafted = pickle.dumps(Marker(marker))

    # a folder drivelab never recorded (a downloaded one): tuner.pkl is not recorded
    (experiment / "tuner.pkl").write_bytes(crafted)
    line = one_error_line(run_cli_here("sweep", "--resume", str(out)))
    assert f"{experiment / 'tuner.pkl'} was not recorded by drivelab" in line and "remove" in line
    assert not marker.exists() and not ray.is_initialized()

    # the crafter also wrote drivelab's JSON, with the right sha256: no seal under this user's key
    import hashlib

    forged = {"closed": True, "hmac": "0" * 64,
              "files": {"tune/tune/tuner.pkl": hashlib.sha256(crafted).hexdigest()}}
    (out / CHECKSUMS).write_text(json.dumps(forged))
    line = one_error_line(run_cli_here("sweep", "--resume", str(out)))
    assert "tuner.pkl was not recorded by drivelab" in line and not marker.exists()

    # a folder drivelab sealed, then one of its pickles swapped
    (experiment / "tuner.pkl").write_bytes(pickle.dumps({"honest": True}))
    (experiment / "experiment_state-2026-01-01_00-00-00.json").write_text("{}")
    record(out, experiment, closed=True)
    (experiment / "tuner.pkl").write_bytes(crafted)
    line = one_error_line(run_cli_here("sweep", "--resume", str(out)))
    assert "tuner.pkl differs from the copy drivelab recorded" in line and not marker.exists()

    # ... or an experiment state added after a driver that ended normally
    (experiment / "tuner.pkl").write_bytes(pickle.dumps({"honest": True}))
    (experiment / "experiment_state-2099-01-01_00-00-00.json").write_bytes(crafted)
    line = one_error_line(run_cli_here("sweep", "--resume", str(out)))
    assert "experiment_state-2099-01-01_00-00-00.json was not recorded" in line
    assert not marker.exists() and not ray.is_initialized()
    assert (experiment / "tuner.pkl").exists()  # a refusal removes nothing


def test_state_left_by_a_killed_driver_is_never_loaded(tmp_path: Path, small_dataset: Path) -> None:
    """kill -9 after the first record: Tune's later state is dropped, the ledger carries on."""
    from drivelab.sweep.trust import CHECKSUMS, check_restorable, record

    out = new_folder(tmp_path, small_dataset)
    experiment = out / "tune" / "tune"
    experiment.mkdir(parents=True)
    (experiment / "tuner.pkl").write_bytes(pickle.dumps({"honest": True}))
    record(out, experiment, closed=False)  # what the driver records before `fit`
    assert check_restorable(out, experiment)  # nothing unrecorded yet: Tune may restore
    (experiment / "experiment_state-2026-01-01_00-00-00.json").write_bytes(
        pickle.dumps(Marker(tmp_path / "pwned")))
    assert not check_restorable(out, experiment)
    assert not experiment.exists() and not (out / CHECKSUMS).exists()
    assert (out / "sweep.yaml").is_file() and (out / "trials").is_dir()  # drivelab's own kept
    assert not (tmp_path / "pwned").exists()


def test_tune_folders_that_are_links_are_refused(tmp_path: Path, small_dataset: Path) -> None:
    from drivelab.sweep.spec import SweepError
    from drivelab.sweep.trust import check_restorable

    out = new_folder(tmp_path, small_dataset)
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "tune").mkdir(parents=True)
    (elsewhere / "tune" / "keep.txt").write_text("mine")
    (out / "tune").symlink_to(elsewhere, target_is_directory=True)
    with pytest.raises(SweepError, match="is a link or lies outside"):
        check_restorable(out, out / "tune" / "tune")
    assert (elsewhere / "tune" / "keep.txt").read_text() == "mine"


# ---------------------------------------------------------------- item 9: one driver at a time
HOLDER = """
import sys, time
from pathlib import Path
from drivelab.sweep.folder import SweepFolder
with SweepFolder.open(Path(sys.argv[1])).driving():
    print("holding", flush=True)
    time.sleep(120)
"""


def test_a_second_driver_is_refused_and_a_dead_ones_lock_is_taken_over(
    tmp_path: Path, small_dataset: Path
) -> None:
    ray = pytest.importorskip("ray")
    out = new_folder(tmp_path, small_dataset)
    before = sorted(p.name for p in out.rglob("*"))
    first = subprocess.Popen([sys.executable, "-c", HOLDER, str(out)], stdout=subprocess.PIPE, text=True)
    try:
        assert first.stdout.readline().strip() == "holding"
        line = one_error_line(run_cli_here("sweep", "--resume", str(out)))
        assert f"being run by another drivelab sweep (pid {first.pid}" in line
        assert ".sweep.lock" in line and not ray.is_initialized()
        assert sorted(p.name for p in out.rglob("*")) == sorted([*before, ".sweep.lock"])
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=30)
    assert (out / ".sweep.lock").read_text().strip() == str(first.pid)  # stale: its pid is dead
    from drivelab.sweep.folder import SweepFolder

    with SweepFolder.open(out).driving():  # the kernel dropped the lock with its process
        assert (out / ".sweep.lock").read_text().strip() == str(os.getpid())


def test_a_lock_that_is_a_link_is_not_followed(tmp_path: Path, small_dataset: Path) -> None:
    out = new_folder(tmp_path, small_dataset)
    victim = tmp_path / "bashrc"
    victim.write_text("keep me\n")
    (out / ".sweep.lock").symlink_to(victim)
    line = one_error_line(run_cli_here("sweep", "--resume", str(out)))
    assert "cannot take the sweep lock" in line
    assert victim.read_text() == "keep me\n"


# ---------------------------------------------------------------- item 13: seeds
@pytest.mark.parametrize(("change", "expected"), [
    ({"seeds": [-1]}, "seeds.0: -1 is not a seed"),
    ({"seeds": [4, 2**32]}, "seeds.1: 4294967296 is not a seed"),
    ({"seeds": [-10**40]}, "seeds.0: a negative 133-bit number is not a seed"),
])
def test_out_of_range_sweep_seeds_are_one_line_before_anything(
    tmp_path: Path, small_dataset: Path, change: dict, expected: str
) -> None:
    spec = write_spec(tmp_path, small_dataset, **change)
    line = one_error_line(run_cli_here("sweep", str(spec), "--out", str(tmp_path / "out")))
    assert expected in line and len(line) < 300
    assert not (tmp_path / "out").exists()


def test_repeats_past_the_last_seed_and_negative_train_seeds_are_one_line(
    tmp_path: Path, small_dataset: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = write_spec(tmp_path, small_dataset, seeds=3)
    line = one_error_line(run_cli_here("sweep", str(spec), f"seed={2**32 - 2}", "--out", str(tmp_path / "o")))
    assert "seed: input should be less than 4294967296" in line and not (tmp_path / "o").exists()
    monkeypatch.chdir(tmp_path)
    for seed in ("-1", str(2**32)):
        line = one_error_line(run_cli_here("train", str(PILOTNET), f"seed={seed}", f"data.path={small_dataset}"))
        assert line.startswith("error: seed: input should be"), line
    assert not (tmp_path / "runs").exists()


# ---------------------------------------------------------------- item 14: long grid values
def test_a_300_character_grid_value_makes_bounded_distinct_names(tmp_path: Path, small_dataset: Path) -> None:
    from drivelab.sweep.folder import SweepFolder
    from drivelab.sweep.spec import CELL_NAME_MAX, plan_sweep, read_spec
    from drivelab.sweep.trial import run_path

    values = ["a" * 300, "a" * 299 + "b", "a b" * 100]
    spec_path = write_spec(tmp_path, small_dataset, grid={"notes": values},
                           variants=[{"name": "v" * 250, "overrides": {"train.lr": 0.001}}])
    plan = plan_sweep(read_spec(spec_path)[0])
    names = [c.name for c in plan.cells]
    assert len(set(names)) == 3 and all(len(n) <= CELL_NAME_MAX for n in names), names
    assert [t.cell.values["notes"] for t in plan.trials] == values  # the values themselves intact
    folder = SweepFolder.create(tmp_path / "sweep", {}, [])
    for trial in plan.trials:  # the ledger file and the run folder can be made
        folder.write_trial(trial.name, {"trial": trial.name, "status": "pending"})
        run_path(folder, plan, trial).mkdir(parents=True)
        assert plan.config(trial).notes in values
    assert len(folder.ledger()) == 3


def test_a_model_line_too_long_for_a_folder_name_is_one_line(
    tmp_path: Path, small_dataset: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    line = one_error_line(run_cli_here("train", str(PILOTNET), "line=" + "L" * 300, f"data.path={small_dataset}"))
    assert "line: string should have at most 200 characters" in line and len(line) < 200
    spec = write_spec(tmp_path, small_dataset, grid={"notes": ["n" * 300]})
    line = one_error_line(run_cli_here("sweep", str(spec), "line=" + "L" * 195, "--out", "o"))
    assert "is 242 characters, over 200: shorten the base config's line" in line
    assert not (tmp_path / "runs").exists() and not (tmp_path / "o").exists()


# ---------------------------------------------------------------- items 2, 12, 14 on a real Ray
def test_relative_paths_interrupt_and_resume_on_a_real_ray(tmp_path: Path, small_dataset: Path) -> None:
    """A user's session in one folder: relative --out, Ctrl-C, the hint, a relative --resume."""
    pytest.importorskip("ray")
    long_value = "x" * 300
    write_spec(tmp_path, small_dataset, grid={"notes": [long_value, "short"]})
    driver = subprocess.Popen(
        [sys.executable, "-m", "drivelab.cli", "sweep", "sweep.yaml", "--out", "rel/sw"],
        cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "SDL_VIDEODRIVER": "dummy", "COLUMNS": "300"},
    )
    out = tmp_path / "rel" / "sw"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and driver.poll() is None:
        records = [json.loads(p.read_text()) for p in (out / "trials").glob("*.json") if p.stat().st_size]
        if any(r.get("status") == "finished" for r in records):
            break
        time.sleep(0.3)
    assert driver.poll() is None, driver.stderr.read()
    driver.send_signal(signal.SIGINT)  # Ctrl-C: Tune stops the trials and saves its state
    _, stderr = driver.communicate(timeout=120)
    assert driver.returncode == 130, stderr
    hint = stderr.strip().splitlines()[-1]
    assert hint.endswith(f"continue with `drivelab sweep --resume {out}`"), stderr
    assert json.loads((out / "tune-checksums.json").read_text())["closed"] is True

    resumed = run_cli("sweep", "--resume", "rel/sw", cwd=tmp_path, timeout=300)  # restores Tune's state
    assert resumed.returncode == 0, resumed.stderr
    assert "ArrowInvalid" not in resumed.stderr
    records = {p.stem: json.loads(p.read_text()) for p in (out / "trials").glob("*.json")}
    assert sorted(r["status"] for r in records.values()) == ["finished", "finished"], records
    assert all(len(name) < 100 for name in records)
    assert {r["values"]["notes"] for r in records.values()} == {long_value, "short"}
