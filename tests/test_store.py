"""The Zarr episode store: commit protocol, listing, statistics, integrity checks."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import zarr
from hypothesis import given, settings
from hypothesis import strategies as st

from drivelab.data.episode_writer import write_episode
from drivelab.data.inspect import dataset_info, verify_dataset
from drivelab.data.records import DatasetError, DatasetMeta, EpisodeRecord
from drivelab.data.stats import SignalMoments, merge_moments
from drivelab.data.store import DatasetStore
from drivelab.sim.base import SignalSpec

META = DatasetMeta(
    env_id="Test-v0",
    fps=50.0,
    frame_shape=(8, 12, 3),
    telemetry=(SignalSpec("speed", "m/s"), SignalSpec("purpose", "", size=2)),
    actions=(SignalSpec("steering", "", low=-1, high=1), SignalSpec("accel_brake", "", low=-1, high=1)),
    chunk_frames=4,
)


def make_record(t: int, seed: int = 0) -> EpisodeRecord:
    rng = np.random.default_rng(seed)
    return EpisodeRecord(
        frames=rng.integers(0, 256, size=(t, 8, 12, 3), dtype=np.uint8),
        telemetry={
            "speed": rng.random((t, 1), dtype=np.float32) * 50,
            "purpose": rng.normal(size=(t, 2)).astype(np.float32),
        },
        actions={
            "steering": rng.uniform(-1, 1, (t, 1)).astype(np.float32),
            "accel_brake": rng.uniform(-1, 1, (t, 1)).astype(np.float32),
        },
        reward=rng.normal(size=t).astype(np.float32),
        perturbed=rng.random(t) < 0.1,
        info={"track_seed": seed, "return": 1.5},
    )


def test_roundtrip_and_listing(tmp_path: Path) -> None:
    store = DatasetStore.create(tmp_path / "d.zarr", META)
    records = {0: make_record(10, 0), 1: make_record(7, 1)}
    for i, rec in records.items():
        write_episode(store, i, rec)
    again = DatasetStore.open(tmp_path / "d.zarr")
    assert [e.index for e in again.episodes()] == [0, 1]
    g = again.episode(1)
    np.testing.assert_array_equal(g["frames"][:], records[1].frames)
    np.testing.assert_array_equal(g["telemetry/purpose"][:], records[1].telemetry["purpose"])
    np.testing.assert_array_equal(g["actions/steering"][:], records[1].actions["steering"])
    np.testing.assert_array_equal(g["perturbed"][:], records[1].perturbed)
    assert g.attrs["track_seed"] == 1 and g.attrs["committed"] is True
    # plain zarr sees a valid v3 hierarchy
    root = zarr.open_group(str(tmp_path / "d.zarr"), mode="r")
    assert root.attrs["format"] == "drivelab.dataset"
    assert root["episodes/000000/frames"].shape == (10, 8, 12, 3)


def test_uncommitted_episode_is_invisible(tmp_path: Path) -> None:
    store = DatasetStore.create(tmp_path / "d.zarr", META)
    write_episode(store, 0, make_record(5))
    # a recorder killed between the rename and the marker leaves a group without `committed`
    info = write_episode(store, 1, make_record(5, 1))
    marker = store.path / "episodes" / info.name / "zarr.json"
    raw = json.loads(marker.read_text())
    raw["attributes"]["committed"] = False
    marker.write_text(json.dumps(raw))
    (store.path / "_staging" / "000002-deadbeef").mkdir()
    assert [e.index for e in store.episodes()] == [0]
    assert store.leftovers() == ["_staging/000002-deadbeef", "episodes/000001"]
    assert store.next_index() == 2
    with pytest.raises(DatasetError, match="not a committed episode"):
        store.episode(1)
    report = verify_dataset(store)
    assert report.ok and report.episodes == 1 and len(report.leftovers) == 2
    store.remove_leftovers()
    assert store.leftovers() == []


def test_create_refuses_existing_path(tmp_path: Path) -> None:
    target = tmp_path / "d.zarr"
    target.mkdir()
    (target / "precious.txt").write_text("keep me")
    with pytest.raises(DatasetError, match="already exists"):
        DatasetStore.create(target, META)
    assert (target / "precious.txt").read_text() == "keep me"


def test_open_rejects_foreign_and_newer_stores(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="does not exist"):
        DatasetStore.open(tmp_path / "nope")
    (tmp_path / "plain").mkdir()
    with pytest.raises(DatasetError, match="not a drivelab dataset"):
        DatasetStore.open(tmp_path / "plain")
    zarr.open_group(str(tmp_path / "other.zarr"), mode="w", attributes={"format": "x"})
    with pytest.raises(DatasetError, match="not a drivelab dataset"):
        DatasetStore.open(tmp_path / "other.zarr")
    store = DatasetStore.create(tmp_path / "new.zarr", META)
    store.update_attrs(version=99)
    with pytest.raises(DatasetError, match="newer than this drivelab"):
        DatasetStore.open(tmp_path / "new.zarr")


def test_record_with_nan_is_refused(tmp_path: Path) -> None:
    store = DatasetStore.create(tmp_path / "d.zarr", META)
    rec = make_record(6)
    rec.telemetry["speed"][3] = np.nan
    with pytest.raises(DatasetError, match="NaN"):
        write_episode(store, 0, rec)
    assert store.episodes() == []


def test_stats_are_exact_over_episodes(tmp_path: Path) -> None:
    store = DatasetStore.create(tmp_path / "d.zarr", META)
    recs = [make_record(t, s) for s, t in enumerate((9, 4, 13))]
    for i, r in enumerate(recs):
        write_episode(store, i, r)
    store.assign_splits(val=[1], test=[2])
    info = dataset_info(store)
    assert info["episodes"] == 3 and info["frames"] == 26
    assert info["splits"]["val"]["indices"] == [1] and info["splits"]["train"]["frames"] == 9
    purpose = np.concatenate([r.telemetry["purpose"] for r in recs]).astype(np.float64)
    s = info["signals"]["telemetry"]["purpose"]
    np.testing.assert_allclose(s["mean"], purpose.mean(0), rtol=1e-9)
    np.testing.assert_allclose(s["std"], purpose.std(0), rtol=1e-6)
    np.testing.assert_allclose(s["min"], purpose.min(0))
    frames = np.concatenate([r.frames for r in recs]).reshape(-1, 3) / 255.0
    np.testing.assert_allclose(info["frame_stats"]["mean"], frames.mean(0), rtol=1e-9)


def test_verify_finds_corrupt_chunk_and_nan(tmp_path: Path) -> None:
    store = DatasetStore.create(tmp_path / "d.zarr", META)
    for i in range(2):
        write_episode(store, i, make_record(10, i))
    assert verify_dataset(store).ok
    chunk = next((store.path / "episodes" / "000000" / "frames" / "c").rglob("*"))
    while chunk.is_dir():
        chunk = next(chunk.iterdir())
    chunk.write_bytes(b"\x00garbage" * 3)
    arr = zarr.open_array(str(store.path / "episodes" / "000001" / "actions" / "steering"), mode="r+")
    arr[2] = np.nan
    report = verify_dataset(store)
    assert not report.ok
    text = "\n".join(report.problems)
    assert "000000: frames" in text and "unreadable" in text
    assert "000001: actions/steering holds NaN" in text


@settings(max_examples=30, deadline=None)
@given(st.lists(st.integers(1, 20), min_size=1, max_size=5), st.integers(0, 2**16))
def test_merged_moments_equal_direct(lengths: list[int], seed: int) -> None:
    rng = np.random.default_rng(seed)
    parts = [rng.normal(3.0, 2.0, size=(n, 2)) for n in lengths]
    merged = merge_moments([SignalMoments.of(p) for p in parts])
    allv = np.concatenate(parts)
    np.testing.assert_allclose(merged.mean, allv.mean(0), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(merged.std, allv.std(0), rtol=1e-6, atol=1e-9)
    assert merged.count == len(allv)


def test_uint8_moments_match_float_path() -> None:
    frames = np.random.default_rng(1).integers(3, 250, size=(500, 3), dtype=np.uint8)
    assert SignalMoments.of_uint8(frames) == SignalMoments.of(frames)
