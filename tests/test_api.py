"""The Python API (`drivelab.collect / train / evaluate / export / load_policy`) and runs whose
dataset is found from any working directory.

One notebook-sized script, written WITHOUT an ``if __name__ == "__main__"`` guard, collects,
trains, evaluates (``workers=1``: in this process) and loads the policy from a folder outside the
checkout; a spawned worker would have re-run the whole script (a second collection into the same
folder fails, a second training makes ``_v2``). The run it leaves then travels: ``eval
--offline``, ``diagnose`` and ``export`` are run from another directory.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from conftest import run_cli_here

SCRIPT = """\
import drivelab

drivelab.collect("data.zarr", episodes=3, val_episodes=1, max_steps=40)
run = drivelab.train("carracing/pilotnet", "data.path=data.zarr", "data.input_size=[64,64]",
                     "train.batch_size=8", "train.max_batches=2", "train.val_every=2",
                     "train.checkpoint_every=2", "train.warmup_batches=0")
reports = drivelab.evaluate(run, episodes=1, max_steps=20, baseline=["expert"])
policy = drivelab.load_policy(run)
print("RESULT", run, [r.driver for r in reports], [len(r.rows) for r in reports], policy.label)
"""


def _clean_env() -> dict[str, str]:
    """This checkout's source first on the path (as pytest imports it), headless."""
    source = str(Path(__file__).resolve().parents[1] / "src")
    return {**os.environ, "SDL_VIDEODRIVER": "dummy", "OMP_NUM_THREADS": "1",
            "PYTHONPATH": os.pathsep.join([source, os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}


@pytest.fixture(scope="module")
def made_elsewhere(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder the API script ran in: ``data.zarr`` and ``runs/`` (data.path kept relative)."""
    folder = tmp_path_factory.mktemp("notebook")
    (folder / "script.py").write_text(SCRIPT)
    done = subprocess.run([sys.executable, "script.py"], cwd=folder, capture_output=True, text=True,
                          timeout=300, env=_clean_env())
    assert done.returncode == 0, done.stderr[-3000:]
    result = [line for line in done.stdout.splitlines() if line.startswith("RESULT")]
    assert result == ["RESULT runs/carracing_pilotnet/carracing_pilotnet_v1 ['carracing_pilotnet_v1', 'expert'] [1, 1] "
                      "carracing_pilotnet_v1@2"], done.stdout
    return folder


def test_api_script_without_main_guard_runs_once(made_elsewhere: Path) -> None:
    """One run version, one dataset of 3 episodes: nothing was executed twice."""
    versions = sorted(p.name for p in (made_elsewhere / "runs" / "carracing_pilotnet").iterdir())
    assert versions == ["carracing_pilotnet_v1"]
    assert sorted(p.name for p in (made_elsewhere / "data.zarr" / "episodes").iterdir()
                  if p.is_dir()) == ["000000", "000001", "000002"]
    config = (made_elsewhere / "runs/carracing_pilotnet/carracing_pilotnet_v1/config.yaml").read_text()
    assert "path: data.zarr" in config  # relative, as written: the next test needs it so


def test_import_drivelab_is_light_and_names_the_api() -> None:
    code = ("import sys, drivelab; from importlib.metadata import version; "
            "assert 'torch' not in sys.modules, 'import drivelab imported torch'; "
            "assert drivelab.__version__ == version('drivelab'); "
            "assert {'collect', 'train', 'evaluate', 'export', 'load_policy'} <= set(dir(drivelab)); "
            "import drivelab.train.config_source; "  # the subpackage bound as an attribute stays callable
            "assert callable(drivelab.train) and callable(drivelab.evaluate) and callable(drivelab.collect); "
            "assert 'torch' not in sys.modules; print('ok')")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          env=_clean_env())
    assert done.stdout.strip() == "ok", done.stderr[-2000:]


def test_a_run_finds_its_dataset_from_another_directory(
    made_elsewhere: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``data.path: data.zarr`` is relative; run.json's absolute path finds it from elsewhere."""
    run = str(made_elsewhere / "runs/carracing_pilotnet/carracing_pilotnet_v1")
    monkeypatch.chdir(tmp_path)
    offline = run_cli_here("eval", run, "--offline", "val")
    assert offline.returncode == 0, offline.stderr
    assert "steering" in offline.stdout
    diagnosis = run_cli_here("diagnose", run, "--tracks", "0")
    assert diagnosis.returncode == 0, diagnosis.stderr


def test_a_moved_folder_finds_its_dataset_by_checksum_or_names_the_paths(
    made_elsewhere: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A demo folder copied elsewhere (the original gone): the dataset under a folder above the
    run whose checksum matches is used; with none, one line names the paths and ``--dataset``."""
    from drivelab.runs.dataset_path import DatasetNotFound, run_dataset
    from drivelab.runs.folder import RunFolder

    moved = tmp_path / "moved" / made_elsewhere.name
    shutil.copytree(made_elsewhere, moved)
    original = made_elsewhere / "data.zarr"
    hidden = made_elsewhere / "data.zarr.hidden"
    run = RunFolder.open(moved / "runs/carracing_pilotnet/carracing_pilotnet_v1")
    recorded = json.loads(run.status_path.read_text())["provenance"]["dataset"]
    assert recorded["path"] == str(original) and recorded["checksum"].startswith("sha256:")
    monkeypatch.chdir(tmp_path)
    original.rename(hidden)
    try:
        assert run_dataset(run, "data.zarr") == moved / "data.zarr"
        (moved / "data.zarr").rename(moved / "elsewhere.zarr")
        with pytest.raises(DatasetNotFound, match=r"not at .*data\.zarr nor data\.zarr: pass --dataset PATH"):
            run_dataset(run, "data.zarr")
        refused = run_cli_here("export", str(run.path), "--out", str(tmp_path / "p.onnx"))
        assert refused.returncode == 2 and refused.stderr.count("\n") == 1, refused.stderr
        assert "pass --dataset PATH" in refused.stderr and str(original) in refused.stderr
        assert not (tmp_path / "p.onnx").exists()
    finally:
        hidden.rename(original)


class _HereJob:
    """Records the process it runs in; fails on task 2; sets torch's threads as EvalJob does."""

    def open(self) -> None:
        import torch

        torch.set_num_threads(1)

    def run(self, task: int, report: Callable[[int], None]) -> tuple[int, int]:
        report(5)
        if task == 2:
            raise ValueError("boom on 2")
        return task, os.getpid()

    def close(self) -> None:
        pass


def test_one_worker_runs_in_this_process_with_the_pools_callbacks() -> None:
    """Same callbacks as the spawned pool (a failed task reported, the others go on; False from
    ``on_error`` stops), in this process, and torch's thread count put back."""
    import torch

    from drivelab.workers import run_jobs

    threads = torch.get_num_threads()
    torch.set_num_threads(2)  # not 1: the job's open() sets 1, which must not stay
    done: dict[int, tuple[int, int]] = {}
    failed: list[tuple[int, str]] = []
    steps: list[int] = []

    def on_error(task: int, message: str, _trace: str) -> bool:
        failed.append((task, message))
        return True

    try:
        run_jobs(_HereJob(), [1, 2, 3], workers=1, on_progress=steps.append, on_done=done.__setitem__,
                 on_error=on_error)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(threads)
    assert done == {1: (1, os.getpid()), 3: (3, os.getpid())} and failed == [(2, "ValueError: boom on 2")]
    assert steps == [5, 5, 5]
    done.clear()
    run_jobs(_HereJob(), [2, 3], workers=1, on_done=done.__setitem__, on_error=lambda *_: False)
    assert done == {}  # stopped at the first failure, as collection asks


def test_the_calling_process_is_one_of_the_workers() -> None:
    """With two workers this process drives episodes while the spawned one starts up (it takes
    the first task before any worker could have imported drivelab), and it still gets every
    other worker's results and failures; its torch threads are put back."""
    import torch

    from drivelab.workers import run_jobs

    threads = torch.get_num_threads()
    done: dict[int, tuple[int, int]] = {}
    failed: list[int] = []
    steps: list[int] = []
    run_jobs(_HereJob(), [1, 2, 3, 4, 5, 6], workers=2, on_progress=steps.append, on_done=done.__setitem__,
             on_error=lambda task, _m, _t: failed.append(task) is None)
    assert torch.get_num_threads() == threads
    assert sorted(done) == [1, 3, 4, 5, 6] and failed == [2] and steps == [5] * 6
    assert done[1][1] == os.getpid() and {task for task, _pid in done.values()} == {1, 3, 4, 5, 6}
