"""`drivelab data edit`: every operation on real (tiny) Zarr stores, the source's bytes untouched,
provenance and statistics in the result, refusals in one line with nothing written, and a kill -9
mid-edit that leaves no dataset that opens."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from conftest import run_cli_here
from drivelab.data.edit import dataset_checksum, edit_dataset
from drivelab.data.episode_writer import write_episode
from drivelab.data.records import DatasetError, DatasetMeta, EpisodeRecord
from drivelab.data.store import DatasetStore
from drivelab.sim.base import SignalSpec

LENGTHS = (12, 20, 9, 15)


def make_store(path: Path, lengths=LENGTHS, env: str = "tiny-v0", speed_name: str = "speed", base: int = 0,
               val=(), test=(), live: bool = False) -> Path:
    """A real store: frames and signals whose values encode (episode, step) so every copy is checkable."""
    meta = DatasetMeta(env_id=env, fps=10.0, frame_shape=(8, 8, 3),
                       telemetry=(SignalSpec(speed_name, "m/s"),),
                       actions=(SignalSpec("steer", "", 1, -1.0, 1.0), SignalSpec("throttle", "", 1, 0.0, 1.0)),
                       chunk_frames=4)
    store = DatasetStore.create(path, meta)
    for i, n in enumerate(lengths):
        t = np.arange(n, dtype=np.float32)
        ep = base + i
        frames = np.broadcast_to(((ep * 10 + np.arange(n)) % 256).astype(np.uint8)[:, None, None, None], (n, 8, 8, 3))
        info = {"track_seed": 100 + ep, "return": float(ep)}
        if live:
            info |= {"live_round": i, "live_beta": 1.0 / (i + 1), "live_driver": "mixed",
                     "live_executor": "".join("e" if k % 4 < 2 else "p" for k in range(n))}
        write_episode(store, i, EpisodeRecord(
            frames=np.ascontiguousarray(frames),
            telemetry={speed_name: (t + 100 * ep)[:, None]},
            actions={"steer": (np.sin(t) * 0.5)[:, None].astype(np.float32), "throttle": np.full((n, 1), 0.1 * ep, np.float32)},
            reward=t * 0.01, perturbed=(np.arange(n) % 3 == 0), info=info))
    with store.writer_lock():
        store.update_attrs(episodes=len(lengths), source="test")
        store.assign_splits(list(val), list(test))
    return path


@pytest.fixture
def src(tmp_path: Path) -> Path:
    return make_store(tmp_path / "src", val=[2], test=[3], live=True)


def speeds(path: Path) -> list[list[float]]:
    store = DatasetStore.open(path)
    return [store.read_array(e.index, "telemetry/speed")[:, 0].tolist() for e in store.episodes()]


def test_drop_trim_split_keep_values_stats_provenance_and_source_bytes(src: Path, tmp_path: Path) -> None:
    before = dataset_checksum(src)
    edit_dataset(src, tmp_path / "dropped", "drop", ["1"])
    new = DatasetStore.open(tmp_path / "dropped")
    assert [e.length for e in new.episodes()] == [12, 9, 15]
    assert [s[0] for s in speeds(tmp_path / "dropped")] == [0, 200, 300]  # episodes 0, 2, 3 in order
    assert [new.split_of(i) for i in range(3)] == ["train", "val", "test"]  # splits follow their episodes
    m = new.moments()["telemetry/speed"]  # statistics recomputed from the kept frames only
    kept = np.concatenate([np.arange(n) + 100 * e for e, n in ((0, 12), (2, 9), (3, 15))])
    assert m.count == kept.size and m.mean[0] == pytest.approx(kept.mean())
    (edit,) = new.attrs["edits"]
    assert edit["operation"] == "drop" and edit["args"] == ["1"] and edit["sources"][0]["checksum"] == before
    assert edit["episodes"] == 3 and edit["frames"] == 36 and new.attrs["source"] == "test"
    assert new.episodes()[1].attrs["edit_from"] == {"source": 0, "episode": 2, "start": 0, "stop": 9}

    from drivelab.data.inspect import verify_dataset

    assert verify_dataset(new).ok  # chunk-copied episodes pass the full integrity check
    edit_dataset(src, tmp_path / "reencoded", "drop", ["1"], copy_chunks=False)  # decoded and committed anew
    again = DatasetStore.open(tmp_path / "reencoded")
    assert speeds(tmp_path / "reencoded") == speeds(tmp_path / "dropped")
    assert [e.attrs["moments"] for e in again.episodes()] == [e.attrs["moments"] for e in new.episodes()]
    assert all((again.read_array(i, "frames") == new.read_array(i, "frames")).all() for i in range(3))
    assert [e.attrs["edit_from"] for e in again.episodes()] == [e.attrs["edit_from"] for e in new.episodes()]

    edit_dataset(src, tmp_path / "trimmed", "trim", ["1", "5", "12"])
    store = DatasetStore.open(tmp_path / "trimmed")
    ep = store.episodes()[1]
    assert ep.length == 7 and speeds(tmp_path / "trimmed")[1] == [105.0 + k for k in range(7)]
    frames = store.read_array(1, "frames")
    assert frames[:, 0, 0, 0].tolist() == [(10 + 5 + k) % 256 for k in range(7)]
    assert ep.attrs["live_executor"] == "".join("e" if k % 4 < 2 else "p" for k in range(20))[5:12]
    assert store.moments(store.episodes()[1:2])["telemetry/speed"].minimum == (105.0,)

    edit_dataset(src, tmp_path / "resplit", "split", ["val=0,1", "test=2"])
    store = DatasetStore.open(tmp_path / "resplit")
    assert [store.split_of(e.index) for e in store.episodes()] == ["val", "val", "test", "train"]
    edit_dataset(src, tmp_path / "fractions", "split", ["val=0.25", "test=0.5", "seed=3"])
    store = DatasetStore.open(tmp_path / "fractions")
    assert sorted(store.split_of(e.index) for e in store.episodes()) == ["test", "test", "train", "val"]
    assert dataset_checksum(src) == before  # the source's bytes never changed


def test_merge_and_filters(src: Path, tmp_path: Path) -> None:
    other = make_store(tmp_path / "other", lengths=(5, 6), base=7)
    before = (dataset_checksum(src), dataset_checksum(other))
    edit_dataset(src, tmp_path / "merged", "merge", [str(other)])
    merged = DatasetStore.open(tmp_path / "merged")
    assert [e.length for e in merged.episodes()] == [*LENGTHS, 5, 6]
    assert [s[0] for s in speeds(tmp_path / "merged")] == [0, 100, 200, 300, 700, 800]
    assert [merged.split_of(e.index) for e in merged.episodes()] == ["train", "train", "val", "test", "train", "train"]
    sources = merged.attrs["edits"][0]["sources"]
    assert [s["checksum"] for s in sources] == list(before) and [s["episodes"] for s in sources] == [4, 2]
    assert merged.moments()["frames"].count == sum(LENGTHS) * 64 + 11 * 64

    edit_dataset(src, tmp_path / "late", "filter", ["live_round>=2"])  # whole episodes by an attribute
    assert [s[0] for s in speeds(tmp_path / "late")] == [200, 300]
    edit_dataset(src, tmp_path / "expert", "filter", ["driver==expert"])  # runs of expert-driven frames
    store = DatasetStore.open(tmp_path / "expert")
    assert all(e.attrs["live_executor"] == "e" * e.length for e in store.episodes())
    assert [e.length for e in store.episodes()][:3] == [2, 2, 2] and sum(e.length for e in store.episodes()) == 6 + 10 + 5 + 8
    edit_dataset(src, tmp_path / "fast", "filter", ["telemetry/speed>=205"])
    assert speeds(tmp_path / "fast") == [[205.0 + k for k in range(4)], [300.0 + k for k in range(15)]]
    # a chained edit keeps the history: the filter of the merge lists both
    edit_dataset(tmp_path / "merged", tmp_path / "chained", "drop", ["0-3"])
    chained = DatasetStore.open(tmp_path / "chained")
    assert [e["operation"] for e in chained.attrs["edits"]] == ["merge", "drop"]
    assert (dataset_checksum(src), dataset_checksum(other)) == before
    info = run_cli_here("data", "info", str(tmp_path / "chained"))
    assert info.returncode == 0 and "made by data edit" in info.stdout and "merge" in info.stdout


@pytest.mark.parametrize(("args", "message"), [
    (["drop", "2,9"], "episode(s) 9 are not committed episodes"),
    (["trim", "1", "5", "21"], "episode 1 has 20 frames"),
    (["trim", "1", "7", "7"], "START < END"),
    (["merge", "{other_env}"], "only datasets of the same env and signals merge"),
    (["merge", "{other_signals}"], "has telemetry ['velocity']"),
    (["filter", "telemetry/velocity>1"], "is not a signal of"),
    (["filter", "live_round>=99"], "leaves no episode"),
    (["split", "val=1", "test=1"], "named for both val and test"),
    (["explode"], "unknown edit 'explode'"),
])
def test_bad_input_is_one_line_exit_2_nothing_written(src: Path, tmp_path: Path, args: list[str], message: str) -> None:
    if args == ["merge", "{other_env}"]:  # made only where needed: stores cost a few zarr writes
        args = ["merge", str(make_store(tmp_path / "env", lengths=(3,), env="other-v0"))]
    if args == ["merge", "{other_signals}"]:
        args = ["merge", str(make_store(tmp_path / "sig", lengths=(3,), speed_name="velocity"))]
    before = dataset_checksum(src)
    listing = sorted(p.name for p in tmp_path.iterdir())
    result = run_cli_here("data", "edit", str(src), *args, "--out", str(tmp_path / "new"))
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0].replace("\n", " "), lines
    assert sorted(p.name for p in tmp_path.iterdir()) == listing  # nothing written, not even a hidden folder
    assert dataset_checksum(src) == before


def test_existing_out_is_refused(src: Path, tmp_path: Path) -> None:
    (tmp_path / "new").mkdir()
    (tmp_path / "new" / "mine.txt").write_text("keep")
    result = run_cli_here("data", "edit", str(src), "drop", "1", "--out", str(tmp_path / "new"))
    assert result.returncode == 2 and result.stderr.startswith("error:") and "already exists" in result.stderr
    assert [p.name for p in (tmp_path / "new").iterdir()] == ["mine.txt"]


KILLED = textwrap.dedent("""
    import sys, time
    from drivelab.data import edit
    real = edit.piece_attrs
    def slow(*args):
        if slow.calls == 2:
            print("STARTED", flush=True)
            time.sleep(60)
        slow.calls += 1
        return real(*args)
    slow.calls = 0
    edit.piece_attrs = slow
    edit.edit_dataset(sys.argv[1], sys.argv[2], "drop", ["0"])
""")


def test_kill_9_mid_edit_leaves_source_intact_and_no_dataset(src: Path, tmp_path: Path) -> None:
    before = dataset_checksum(src)
    out = tmp_path / "new"
    proc = subprocess.Popen([sys.executable, "-c", KILLED, str(src), str(out)], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert proc.stdout is not None and proc.stdout.readline().strip() == "STARTED"  # two episodes committed
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert not out.exists() and dataset_checksum(src) == before
    (left,) = tmp_path.glob(".new.edit-*")  # the hidden, half-filled copy
    assert len(list((left / "episodes").glob("0*"))) == 2
    with pytest.raises(DatasetError, match="unfinished `drivelab data edit`"):
        DatasetStore.open(left)  # no reader takes it for a dataset
    edit_dataset(src, out, "drop", ["0"])  # the dead writer's lock is free: the rerun sweeps the leftover
    assert not left.exists() and [e.length for e in DatasetStore.open(out).episodes()] == list(LENGTHS[1:])


def test_nan_values_are_refused_up_front_and_dropping_them_works(tmp_path: Path) -> None:
    import zarr

    data = make_store(tmp_path / "data", lengths=(5, 6, 7))
    speed = zarr.open_array(str(data / "episodes" / "000001" / "telemetry" / "speed"), mode="r+")
    speed[3] = np.nan  # damaged after its commit: `data info` counts it, training would fail on it
    result = run_cli_here("data", "edit", str(data), "drop", "0", "--out", str(tmp_path / "new"))
    assert result.returncode == 2 and "episode 1 (telemetry/speed)" in result.stderr and not (tmp_path / "new").exists()
    edit_dataset(data, tmp_path / "clean", "drop", ["1"])
    edit_dataset(data, tmp_path / "trimmed", "trim", ["1", "4", "6"])  # the bad frame cut away
    assert [e.length for e in DatasetStore.open(tmp_path / "trimmed").episodes()] == [5, 2, 7]


def test_a_source_changed_mid_edit_fails_and_leaves_nothing(src: Path, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    from drivelab.data import edit

    sums = iter(["sha256:before", "sha256:after"])  # as if a `collect --append` committed meanwhile
    monkeypatch.setattr(edit, "dataset_checksum", lambda path: next(sums))
    with pytest.raises(DatasetError, match="a source changed while it was being copied"):
        edit_dataset(src, tmp_path / "new", "drop", ["0"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]  # no output, no hidden copy
