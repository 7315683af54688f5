"""Issue 12, the data layer: damaged datasets, concurrent writers and bad flags, on real files.

Every test damages a copy of the session's real CarRacing dataset (`small_dataset`: episodes 0
and 1 in train, 2 in val) the way it happens on disk — a truncated ``zarr.json``, a chunk
overwritten with garbage, an array of the wrong shape or gone, a NaN written into a committed
array with zarr, a writer lock held by another process — and checks that the user gets one line
naming the problem, and that nothing is deleted.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import zarr

from conftest import run_cli, run_cli_here
from drivelab.config import load_config
from drivelab.data import collect as collect_module
from drivelab.data.collect import CollectPlan, collect
from drivelab.data.episode_writer import write_episode
from drivelab.data.inspect import dataset_info, verify_dataset
from drivelab.data.loader import EpisodeFrameDataset
from drivelab.data.locks import writer_lock
from drivelab.data.records import LOCK_FILE, DatasetBusy, DatasetError, EpisodeRecord
from drivelab.data.store import DatasetStore
from drivelab.errors import DrivelabError
from drivelab.evaluate.drivers import DriverSpec
from drivelab.evaluate.offline import OfflineJob
from drivelab.evaluate.runner import evaluate
from drivelab.train import train
from test_store import META, make_record

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "carracing" / "pilotnet.yaml"
QUICK = ["data.input_size=[64,64]", "train.batch_size=8", "train.max_batches=2",
         "train.checkpoint_every=2", "train.log_every=1"]


# ---------------------------------------------------------------------------- helpers
@pytest.fixture()
def ds(small_dataset: Path, tmp_path: Path) -> Path:
    """A private copy of the real small dataset, to damage."""
    return Path(shutil.copytree(small_dataset, tmp_path / "copy.zarr"))


def truncate(file: Path) -> None:
    """Cut a real JSON file in half, as a full disk or a killed copy leaves it."""
    data = file.read_bytes()
    file.write_bytes(data[: len(data) // 2])


def first_chunk(array_dir: Path) -> Path:
    return sorted(p for p in (array_dir / "c").rglob("*") if p.is_file())[0]


def tree(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def one_error_line(r: subprocess.CompletedProcess) -> str:
    """The CLI refused with exit 2 and a last line `error: ...`, no traceback."""
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert "Traceback" not in r.stderr, r.stderr
    lines = [ln for ln in r.stderr.strip().splitlines() if ln.strip()]
    assert lines and lines[-1].startswith("error:"), r.stderr
    return lines[-1]


@pytest.fixture()
def held_lock(ds: Path) -> Iterator[subprocess.Popen]:
    """Another process holding the dataset's writer lock, as a running `collect` does."""
    code = ("import sys; from pathlib import Path; from drivelab.data.locks import writer_lock\n"
            "with writer_lock(Path(sys.argv[1])):\n    print('locked', flush=True); sys.stdin.read()")
    proc = subprocess.Popen([sys.executable, "-c", code, str(ds)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
    yield proc
    if proc.poll() is None:
        proc.communicate(timeout=30)


def kill_between_writes_and_rename(store: DatasetStore, index: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """A recorder dying after writing its staging group, before the rename: a real leftover."""

    def die(*_args: object) -> None:
        raise KeyboardInterrupt

    if store.meta == META:
        record = make_record(5, index)
    else:  # the real dataset: replay its episode 0
        g = store.episode(0)
        record = EpisodeRecord(
            frames=g["frames"][:], reward=g["reward"][:], perturbed=g["perturbed"][:],
            telemetry={s.name: g[f"telemetry/{s.name}"][:] for s in store.meta.telemetry},
            actions={s.name: g[f"actions/{s.name}"][:] for s in store.meta.actions},
        )
    with monkeypatch.context() as m:
        m.setattr("drivelab.data.episode_writer.os.rename", die)
        with pytest.raises(KeyboardInterrupt):
            write_episode(store, index, record)


# ---------------------------------------------------------------------------- item 2
def test_verify_never_deletes_a_committed_episode_with_truncated_metadata(ds: Path) -> None:
    group = ds / "episodes" / "000001"
    truncate(group / "zarr.json")
    before = tree(group)
    store = DatasetStore.open(ds)
    assert [d.path for d in store.damaged()] == ["episodes/000001"]
    assert store.leftovers() == [] and [e.index for e in store.episodes()] == [0, 2]
    r = run_cli_here("data", "verify", str(ds))
    line = one_error_line(r)
    assert "episodes/000001 is damaged" in r.stderr and "zarr.json is unreadable" in r.stderr
    assert "1 damaged episode group(s) kept" in line and "never committed" not in r.stdout
    r = run_cli_here("data", "verify", "--remove-leftovers", str(ds))
    one_error_line(r)
    assert "removed" not in r.stdout
    assert tree(group) == before, "the damaged group (its frame chunks) must stay untouched"
    r = run_cli_here("data", "info", str(ds))
    assert r.returncode == 0, r.stderr
    assert "damaged episodes/000001" in r.stdout
    info = json.loads(run_cli_here("data", "info", "--json", "-", str(ds)).stdout)
    assert info["damaged"][0]["path"] == "episodes/000001" and info["leftovers"] == []
    # the loader refuses too: training on the rest would silently drop an episode of some split
    with pytest.raises(DatasetError, match=r"1 damaged episode group\(s\), first episodes/000001: its zarr.json"):
        EpisodeFrameDataset(store, "train", ["steering"])


def test_uncommitted_group_is_a_leftover_only_while_nobody_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Killed between the rename and the marker: all arrays, `committed: false` -> leftover."""
    store = DatasetStore.create(tmp_path / "d.zarr", META)
    write_episode(store, 0, make_record(6))
    info = write_episode(store, 1, make_record(6, 1))
    marker = store.path / "episodes" / info.name / "zarr.json"
    raw = json.loads(marker.read_text())
    raw["attributes"]["committed"] = False
    marker.write_text(json.dumps(raw))
    kill_between_writes_and_rename(store, 2, monkeypatch)
    (store.path / "_staging" / "notes.txt").write_text("someone's file")
    leftovers = store.leftovers()
    assert leftovers[-1] == "episodes/000001" and leftovers[0].startswith("_staging/000002-")
    assert store.foreign_staging() == ["_staging/notes.txt"] and store.damaged() == []
    r = run_cli_here("data", "verify", "--remove-leftovers", str(store.path))
    assert r.returncode == 0, r.stderr
    assert "removed leftover episodes/000001" in r.stdout and "unknown _staging/notes.txt" in r.stdout
    assert store.leftovers() == [] and (store.path / "_staging" / "notes.txt").exists()
    assert [e.index for e in store.episodes()] == [0]


def test_damaged_root_attrs_and_a_vanished_episodes_group(ds: Path, tmp_path: Path) -> None:
    moved = Path(shutil.copytree(ds, tmp_path / "moved.zarr"))
    shutil.move(moved / "episodes" / "000002", tmp_path / "000002")  # as the advice says
    report = verify_dataset(DatasetStore.open(moved))
    assert report.ok and any("val split names episode(s) 000002" in w for w in report.warnings)
    shutil.rmtree(ds / "episodes")
    r = run_cli_here("data", "verify", str(ds))
    one_error_line(r)
    assert "episodes/zarr.json is missing" in r.stderr
    zarr.open_group(str(ds), mode="r+").attrs["splits"] = "oops"
    r = run_cli_here("data", "info", str(ds))
    assert "its `splits` attribute is damaged" in one_error_line(r)


# ---------------------------------------------------------------------------- item 3
def test_assign_splits_rereads_the_root_attrs(tmp_path: Path) -> None:
    first = DatasetStore.create(tmp_path / "d.zarr", META)
    for i in range(3):
        write_episode(first, i, make_record(4, i))
    stale = DatasetStore.open(first.path)  # opened before the other writer's change
    first.assign_splits(val=[1], test=[])
    stale.assign_splits(val=[], test=[2])
    again = DatasetStore.open(first.path)
    assert again.split_of(1) == "val" and again.split_of(2) == "test"
    assert stale.split_of(1) == "val", "the writer's copy is refreshed from disk"


def test_second_appender_that_opened_early_keeps_the_first_ones_val_episode(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Appender B opens the dataset, then appender A (another process) commits a val episode
    before B takes the lock: B must not turn A's val episode into train."""
    out = tmp_path / "d.zarr"
    plan = CollectPlan(env="carracing", seed=3, max_steps=8)
    collect(out, plan, episodes=1)
    original = collect_module.open_for_collection

    def open_then_let_another_process_append(*args: object, **kwargs: object) -> DatasetStore:
        store = original(*args, **kwargs)  # type: ignore[arg-type]
        r = run_cli("collect", "--append", "--episodes", "1", "--val-episodes", "1",
                    "--max-steps", "8", "--seed", "3", "--out", str(out))
        assert r.returncode == 0, r.stderr
        return store

    monkeypatch.setattr(collect_module, "open_for_collection", open_then_let_another_process_append)
    summary = collect(out, plan, episodes=1, append=True, test_episodes=1)
    store = DatasetStore.open(out)
    assert summary.indices == [2], "B takes the next index under the lock, after A's episode"
    assert [store.split_of(i) for i in (0, 1, 2)] == ["train", "val", "test"]
    assert store.attrs["episodes"] == 3


# ---------------------------------------------------------------------------- item 4
def test_remove_leftovers_refuses_while_a_collector_holds_the_lock(
    ds: Path, held_lock: subprocess.Popen, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = DatasetStore.open(ds)
    kill_between_writes_and_rename(store, 3, monkeypatch)  # looks exactly like a live staging
    staged = store.leftovers()
    assert len(staged) == 1 and store.writer_active()
    r = run_cli_here("data", "verify", "--remove-leftovers", str(ds))
    line = one_error_line(r)
    assert "is writing to" in line and "nothing was removed" in line
    assert store.leftovers() == staged and (ds / staged[0]).is_dir()
    r = run_cli_here("data", "verify", str(ds))  # a plain verify calls it work in progress
    assert r.returncode == 0 and "in progress" in r.stdout and "--remove-leftovers deletes" not in r.stdout
    held_lock.communicate(timeout=30)  # the collector finishes
    r = run_cli_here("data", "verify", "--remove-leftovers", str(ds))
    assert r.returncode == 0 and f"removed leftover {staged[0]}" in r.stdout, r.stderr


def test_a_second_open_of_the_lock_in_one_process_conflicts(ds: Path) -> None:
    store = DatasetStore.open(ds)
    with writer_lock(ds):
        assert store.writer_active()
        with pytest.raises(DatasetBusy, match="nothing was removed"):
            store.remove_leftovers()
        with pytest.raises(DatasetBusy, match="is writing to"):
            collect(ds, CollectPlan(env="carracing", seed=0, max_steps=5), episodes=1, append=True)
    assert not store.writer_active() and (ds / LOCK_FILE).exists()


# ---------------------------------------------------------------------------- item 5
def _train(ds: Path, root: Path, *extra: str) -> Path:
    return train(load_config(CONFIG, [f"data.path={ds}", *QUICK, *extra]), runs_root=root).run.path


def test_train_on_a_corrupt_chunk_names_episode_and_array(ds: Path, tmp_path: Path) -> None:
    first_chunk(ds / "episodes" / "000000" / "frames").write_bytes(b"\x00garbage" * 4)
    # read in a DataLoader worker process: the message must still be the one line
    with pytest.raises(DatasetError) as caught:
        _train(ds, tmp_path / "runs", "data.workers=1", "data.val_split=null")
    message = str(caught.value)
    assert "\n" not in message and "Caught" not in message, message
    assert message.startswith(f"{ds}: episode 000000 array frames cannot be read")
    assert f"run `drivelab data verify {ds}`" in message


@pytest.mark.parametrize("damage", ["missing", "wrong_shape", "truncated_meta"])
def test_loader_refuses_bad_arrays_at_open_time(ds: Path, damage: str) -> None:
    array = ds / "episodes" / "000001" / "actions" / "steering"
    if damage == "missing":
        shutil.rmtree(array)
        expected = "actions/steering: array is missing"
    elif damage == "wrong_shape":
        length = json.loads((array / "zarr.json").read_text())["shape"][0]
        group = zarr.open_group(str(array.parent), mode="r+")
        group.create_array("steering", data=np.zeros((length - 3, 1), np.float32), overwrite=True)
        expected = f"actions/steering is float32[{length - 3}, 1], expected float32[{length}, 1]"
    else:
        truncate(array / "zarr.json")
        expected = "actions/steering: its zarr.json is unreadable"
    with pytest.raises(DatasetError) as caught:
        EpisodeFrameDataset(DatasetStore.open(ds), "train", ["steering"])
    assert f"episode 000001: {expected}" in str(caught.value)
    assert "drivelab data verify" in str(caught.value)
    r = run_cli_here("data", "verify", str(ds))
    one_error_line(r)
    assert f"episode 000001: {expected}" in r.stderr


@pytest.fixture(scope="module")
def trained_run(small_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _train(small_dataset, tmp_path_factory.mktemp("runs"), "data.workers=0")


def test_offline_eval_on_a_corrupt_chunk_is_one_line(trained_run: Path, ds: Path) -> None:
    first_chunk(ds / "episodes" / "000002" / "frames").write_bytes(b"\x00garbage" * 4)
    job = OfflineJob(str(trained_run), "val", dataset=ds, workers=1)  # decoded in a worker
    with pytest.raises(DatasetError) as caught:
        job.run()
    message = str(caught.value)
    assert "\n" not in message and "Caught" not in message, message
    assert "episode 000002 array frames cannot be read" in message and "data verify" in message


# ---------------------------------------------------------------------------- item 7
@pytest.mark.parametrize("meta", ["frames/zarr.json", "telemetry/zarr.json"])
def test_verify_reports_a_truncated_array_or_subgroup_json(ds: Path, meta: str) -> None:
    truncate(ds / "episodes" / "000001" / meta)
    r = run_cli_here("data", "verify", str(ds))
    one_error_line(r)
    assert "problem: episode 000001:" in r.stderr and "zarr.json is unreadable" in r.stderr
    assert (ds / "episodes" / "000001" / meta).exists()


@pytest.mark.parametrize("array", ["frames", "actions/steering"])
def test_a_deleted_chunk_file_is_damage_not_zeros(ds: Path, array: str) -> None:
    """zarr reads a missing chunk as fill values: without this check verify said "intact"."""
    first_chunk(ds / "episodes" / "000001" / array).unlink()
    report = verify_dataset(DatasetStore.open(ds))
    assert any(f"episode 000001: {array}: chunk file c/0/" in p and "would read as zeros" in p
               for p in report.problems), report.problems
    with pytest.raises(DatasetError, match=f"episode 000001: {array}: chunk file c/0"):
        EpisodeFrameDataset(DatasetStore.open(ds), "train", ["steering"])


# ---------------------------------------------------------------------------- item 14
def inject_nan(ds: Path, episode: str, key: str, step: int = 3, value: float = np.nan) -> None:
    """Write past the store (which refuses NaN at commit) straight into a committed array."""
    array = zarr.open_array(str(ds / "episodes" / episode / key), mode="r+")
    array[step] = value


def test_nan_in_a_committed_array_shows_in_info_and_verify(ds: Path) -> None:
    inject_nan(ds, "000001", "actions/steering")
    inject_nan(ds, "000002", "telemetry/speed", value=np.inf)
    info = dataset_info(DatasetStore.open(ds))
    assert info["nonfinite"]["values"] == 2 and info["nonfinite"]["episodes"] == [1, 2]
    assert info["signals"]["actions"]["steering"]["nonfinite"] == 1
    assert info["signals"]["telemetry"]["speed"]["nonfinite"] == 1
    assert info["signals"]["actions"]["accel_brake"]["nonfinite"] == 0
    r = run_cli_here("data", "info", str(ds))
    assert r.returncode == 0, r.stderr
    assert "steering (1 NaN/Inf)" in r.stdout and "2 non-finite (NaN/Inf) value(s)" in r.stdout
    assert json.loads(run_cli_here("data", "info", "--json", "-", str(ds)).stdout)["nonfinite"]["values"] == 2
    report = verify_dataset(DatasetStore.open(ds))
    assert report.nonfinite == 2 and any("000001: actions/steering holds NaN/Inf" in p for p in report.problems)


def test_train_on_nan_blames_the_dataset_not_the_learning_rate(ds: Path, tmp_path: Path) -> None:
    inject_nan(ds, "000001", "actions/steering")
    with pytest.raises(DatasetError) as caught:
        _train(ds, tmp_path / "runs", "data.workers=0", "data.val_split=null")
    message = str(caught.value)
    assert "episode 000001 array actions/steering holds 1 NaN/Inf" in message
    assert "drivelab data verify" in message and "train.lr" not in message


def test_offline_eval_reports_nan_inputs(trained_run: Path, ds: Path) -> None:
    inject_nan(ds, "000002", "telemetry/speed")  # the run's history input, in val
    with pytest.raises(DrivelabError, match=r"episode 000002 array telemetry/speed holds 1 NaN/Inf"):
        OfflineJob(str(trained_run), "val", dataset=ds).run()


# ---------------------------------------------------------------------------- items 11, 16
@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--seed", "-5"], "--seed must be 0 or more (got -5)"),
        (["--chunk-frames", "0"], "--chunk-frames must be at least 1"),
        (["--noise-hold", "0", "--noise", "0.5"], "--noise-hold must be at least 1"),
        (["--env", "NoSuchEnv-v9"], "NoSuchEnv-v9"),
    ],
)
def test_refused_collect_leaves_no_folder(tmp_path: Path, flags: list[str], message: str) -> None:
    out = tmp_path / "new.zarr"
    r = run_cli_here("collect", "--episodes", "1", "--max-steps", "5", *flags, "--out", str(out))
    assert message in one_error_line(r)
    assert not out.exists(), "a refused collect must leave nothing behind (the rerun would fail)"


def test_a_fresh_collect_whose_first_episode_fails_leaves_no_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker failing before any commit (here: its report, as `run_jobs` delivers it)."""

    def failing_workers(_job: object, tasks: list[int], _workers: int, _steps: object, _done: object,
                        on_error: object) -> None:
        assert callable(on_error)
        on_error(tasks[0], "SimError: the track could not be generated", "")

    monkeypatch.setattr(collect_module, "run_jobs", failing_workers)
    out = tmp_path / "new.zarr"
    with pytest.raises(DrivelabError, match=r"episode 0 failed in a worker .* so .*new.zarr was removed"):
        collect(out, CollectPlan(env="carracing", seed=0, max_steps=5), episodes=2)
    assert not out.exists()
    # an existing dataset is never removed, even when nothing was added to it
    monkeypatch.undo()
    collect(out, CollectPlan(env="carracing", seed=0, max_steps=5), episodes=1)
    monkeypatch.setattr(collect_module, "run_jobs", failing_workers)
    with pytest.raises(DrivelabError, match="the episodes committed so far are kept"):
        collect(out, CollectPlan(env="carracing", seed=0, max_steps=5), episodes=1, append=True)
    assert [e.index for e in DatasetStore.open(out).episodes()] == [0]


def test_collect_under_a_plain_file_names_the_parent(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("not a folder")
    r = run_cli_here("collect", "--episodes", "1", "--max-steps", "5", "--out", str(tmp_path / "afile" / "x.zarr"))
    assert f"{tmp_path / 'afile'} is a file, not a folder" in one_error_line(r)
    assert (tmp_path / "afile").read_text() == "not a folder"


@pytest.mark.skipif(not Path("/sys").is_dir(), reason="needs /sys (a folder nobody may add to)")
def test_collect_into_a_folder_that_refuses_writes_is_one_line() -> None:
    r = run_cli_here("collect", "--episodes", "1", "--max-steps", "5", "--out", "/sys/drivelab-test.zarr")
    assert "cannot create /sys/drivelab-test.zarr" in one_error_line(r)


# ---------------------------------------------------------------------------- item 18
def test_wording_names_the_flag_and_says_steps(ds: Path) -> None:
    with pytest.raises(DrivelabError, match=r"^--max-steps must be at least 1 \(got 0\)$"):
        evaluate(DriverSpec("random"), [0], max_steps=0)  # what `eval --max-steps 0` calls
    first_chunk(ds / "episodes" / "000000" / "frames").write_bytes(b"\x00garbage")
    r = run_cli_here("data", "verify", str(ds))
    one_error_line(r)
    assert "000000: frames steps 0.." in r.stderr and "frames frames" not in r.stderr
