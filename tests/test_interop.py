"""Datasets from and to the ecosystem: donkeycar tubs in, LeRobot v3 datasets out and in.

The fixtures under tests/fixtures were written by the REAL libraries (donkeycar's ``Tub``,
LeRobot's ``LeRobotDataset.create/add_frame/save_episode``; versions in interop_VERSIONS, made
by scripts/make_interop_fixtures.py), so these tests check our reading of their formats against
what they actually write, value by value. Round trips use a small real CarRacing dataset.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import run_cli_here
from drivelab.data.store import DatasetStore
from drivelab.errors import DrivelabError
from drivelab.interop.deps import MissingExtraError, pyav
from drivelab.interop.donkeycar import DonkeyOptions, import_donkeycar
from drivelab.interop.lerobot_export import export_lerobot
from drivelab.interop.lerobot_import import import_lerobot

FIXTURES = Path(__file__).resolve().parent / "fixtures"
TUB = FIXTURES / "donkeycar_tub"
LEROBOT = FIXTURES / "lerobot_dataset"


def _expected(name: str) -> dict:
    return json.loads((FIXTURES / name).read_text())


def _signal(store: DatasetStore, kind: str, name: str) -> np.ndarray:
    return np.concatenate([store.read_array(e.index, f"{kind}/{name}") for e in store.episodes()])


def _frames(store: DatasetStore) -> np.ndarray:
    return np.concatenate([store.read_array(e.index, "frames") for e in store.episodes()])


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10.0 * np.log10(255.0**2 / mse)


def _tub_pattern(index: int, session: int) -> np.ndarray:
    """The frame make_interop_fixtures.py gave donkeycar for record ``index``."""
    y, x = np.mgrid[0:120, 0:160]
    return np.stack([(x + 7 * index) % 256, (y * 2) % 256, np.full_like(x, 40 * session)], -1).astype(np.uint8)


def _lerobot_pattern(t: int, ep: int) -> np.ndarray:
    y, x = np.mgrid[0:64, 0:96]
    return np.stack([(x * 2 + 9 * t) % 256, (y * 3) % 256, np.full_like(x, 90 * ep)], -1).astype(np.uint8)


# --------------------------------------------------------------------------- donkeycar in
def test_donkeycar_fixture_every_value(tmp_path: Path) -> None:
    report = import_donkeycar([TUB], tmp_path / "dk", DonkeyOptions(val_episodes=1))
    expected = [r for r in _expected("donkeycar_expected.json")["records"] if r["index"] not in (3, 17)]
    store = DatasetStore.open(tmp_path / "dk")
    # two sessions, each cut where a deleted record left a hole: [0-2] [4-11] [12-16] [18-23]
    assert [(e.attrs["first_index"], e.attrs["last_index"]) for e in store.episodes()] == [
        (0, 2), (4, 11), (12, 16), (18, 23)]
    assert (report.episodes, report.frames, report.deleted) == (4, 22, 2)
    assert 15.0 < store.meta.fps < 21.0  # median step of timestamps written at ~20 Hz
    assert store.attrs["splits"]["val"] == [3]
    np.testing.assert_array_equal(_signal(store, "actions", "steering")[:, 0],
                                  np.float32([r["angle"] for r in expected]))
    np.testing.assert_array_equal(_signal(store, "actions", "accel_brake")[:, 0],
                                  np.float32([r["throttle"] for r in expected]))
    np.testing.assert_array_equal(_signal(store, "telemetry", "imu_acl_x")[:, 0],
                                  np.float32([r["imu_acl_x"] for r in expected]))
    np.testing.assert_array_equal(_signal(store, "telemetry", "lap")[:, 0], np.float32([r["lap"] for r in expected]))
    np.testing.assert_array_equal(_signal(store, "telemetry", "human")[:, 0],
                                  np.float32([r["mode"] == "user" for r in expected]))
    frames = _frames(store)
    assert frames.shape == (22, 120, 160, 3)
    for frame, r in zip(frames, expected, strict=True):
        with Image.open(TUB / "images" / f"{r['index']}_cam_image_array_.jpg") as img:
            np.testing.assert_array_equal(frame, np.asarray(img.convert("RGB")))  # the JPEG, decoded
        assert psnr(frame, _tub_pattern(r["index"], r["session"])) > 25.0  # and it is the frame donkeycar got


def test_donkeycar_human_only_and_resize(tmp_path: Path) -> None:
    report = import_donkeycar([TUB], tmp_path / "dk", DonkeyOptions(mode="user", size=(60, 80)))
    store = DatasetStore.open(tmp_path / "dk")
    assert (report.frames, report.other_mode) == (18, 4)  # records 20-23 were driven by local_angle
    assert np.all(_signal(store, "telemetry", "human") == 1.0)
    assert store.meta.frame_shape == (60, 80, 3)


# --------------------------------------------------------------------------- LeRobot in
def test_lerobot_fixture_every_value(tmp_path: Path) -> None:
    report = import_lerobot(LEROBOT, tmp_path / "lr")
    store = DatasetStore.open(tmp_path / "lr")
    expected = _expected("lerobot_expected.json")["episodes"]
    assert (report.episodes, report.frames, report.exact) == (2, 25, False)
    assert [e.length for e in store.episodes()] == [14, 11]
    assert store.meta.fps == 10.0 and store.meta.frame_shape == (64, 96, 3)
    assert [s.name for s in store.meta.telemetry] == ["speed", "yaw_rate", "gear"]
    assert [s.name for s in store.meta.actions] == ["steering", "accel_brake"]
    for k_ep, (info, ep) in enumerate(zip(store.episodes(), expected, strict=True)):
        state = np.float32([f["state"] for f in ep["frames"]])
        action = np.float32([f["action"] for f in ep["frames"]])
        for k, name in enumerate(("speed", "yaw_rate", "gear")):
            np.testing.assert_array_equal(store.read_array(info.index, f"telemetry/{name}")[:, 0], state[:, k])
        for k, name in enumerate(("steering", "accel_brake")):
            np.testing.assert_array_equal(store.read_array(info.index, f"actions/{name}")[:, 0], action[:, k])
        assert info.attrs["tasks"] == [ep["task"]]
        frames = store.read_array(info.index, "frames")
        want = np.stack([_lerobot_pattern(t, k_ep) for t in range(len(frames))])
        assert psnr(frames, want) > 20.0  # LeRobot's AV1 at crf 30 on a sharp synthetic pattern


# --------------------------------------------------------------------------- round trips
def _assert_same_signals(a: DatasetStore, b: DatasetStore) -> None:
    assert a.meta.to_attrs() == b.meta.to_attrs()
    assert a.attrs["splits"] == b.attrs["splits"]
    assert [e.length for e in a.episodes()] == [e.length for e in b.episodes()]
    for ea, eb in zip(a.episodes(), b.episodes(), strict=True):
        for key in [f"telemetry/{s.name}" for s in a.meta.telemetry] + [f"actions/{s.name}" for s in a.meta.actions] \
                + ["reward", "perturbed"]:
            np.testing.assert_array_equal(a.read_array(ea.index, key), b.read_array(eb.index, key), err_msg=key)
        assert eb.attrs["track_seed"] == ea.attrs["track_seed"]


def test_round_trip_images_is_exact(small_dataset: Path, tmp_path: Path) -> None:
    export_lerobot(small_dataset, tmp_path / "le", images=True)
    info = json.loads((tmp_path / "le" / "meta" / "info.json").read_text())
    assert info["codebase_version"] == "v3.0" and info["features"]["observation.images.front"]["dtype"] == "image"
    stats = json.loads((tmp_path / "le" / "meta" / "stats.json").read_text())
    assert np.asarray(stats["observation.images.front"]["mean"]).shape == (3, 1, 1)
    import_lerobot(tmp_path / "le", tmp_path / "back")
    a, b = DatasetStore.open(small_dataset), DatasetStore.open(tmp_path / "back")
    _assert_same_signals(a, b)
    np.testing.assert_array_equal(_frames(a), _frames(b))


def test_round_trip_video_keeps_signals_psnr(small_dataset: Path, tmp_path: Path) -> None:
    export_lerobot(small_dataset, tmp_path / "le", codec="h264")
    import_lerobot(tmp_path / "le", tmp_path / "back")
    a, b = DatasetStore.open(small_dataset), DatasetStore.open(tmp_path / "back")
    _assert_same_signals(a, b)
    value = psnr(_frames(a), _frames(b))
    print(f"round trip through H.264 (crf 30, yuv420p): PSNR {value:.1f} dB")
    assert value > 25.0


# --------------------------------------------------------------------------- bad input
def _tub_copy(tmp_path: Path) -> Path:
    return Path(shutil.copytree(TUB, tmp_path / "tub"))


def _break_catalog(tub: Path) -> None:
    with (tub / "catalog_0.catalog").open("a") as f:
        f.write("{not json\n")


def _mixed_sizes(tub: Path) -> None:
    Image.new("RGB", (80, 60)).save(tub / "images" / "5_cam_image_array_.jpg")


def _lerobot_copy(tmp_path: Path, **info_changes: object) -> Path:
    root = Path(shutil.copytree(LEROBOT, tmp_path / "le"))
    info = json.loads((root / "meta" / "info.json").read_text())
    info.update(info_changes)
    (root / "meta" / "info.json").write_text(json.dumps(info))
    return root


def _lerobot_wrong_shape(tmp_path: Path) -> Path:
    root = _lerobot_copy(tmp_path)
    info = json.loads((root / "meta" / "info.json").read_text())
    info["features"]["observation.images.front"]["shape"] = [32, 48, 3]
    (root / "meta" / "info.json").write_text(json.dumps(info))
    return root


BAD_INPUTS = {
    "not a tub": (lambda t: ["donkeycar", str(FIXTURES / "lerobot_dataset")], "is not a donkeycar tub"),
    "catalog line not JSON": (lambda t: (_break_catalog(p := _tub_copy(t)), ["donkeycar", str(p)])[1],
                              "line 25 is not JSON"),
    "missing image": (lambda t: ((p := _tub_copy(t)) / "images" / "7_cam_image_array_.jpg").unlink()
                      or ["donkeycar", str(p)], "image file(s) the catalog names are missing"),
    "mixed frame sizes (tub)": (lambda t: (_mixed_sizes(p := _tub_copy(t)), ["donkeycar", str(p)])[1],
                                "mismatched frame sizes"),
    "not a LeRobot dataset": (lambda t: ["lerobot", str(TUB)], "is not a LeRobot dataset"),
    "unknown codebase_version": (lambda t: ["lerobot", str(_lerobot_copy(t, codebase_version="v2.1"))],
                                 "codebase_version 'v2.1' is not one drivelab reads"),
    "frames unlike info.json": (lambda t: ["lerobot", str(_lerobot_wrong_shape(t))], "mismatched frame sizes"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_one_line_nothing_written(case: str, tmp_path: Path) -> None:
    make_args, message = BAD_INPUTS[case]
    args = make_args(tmp_path)
    out = tmp_path / "out"
    result = run_cli_here("data", "import", *args, "--out", str(out))
    assert result.returncode != 0
    assert message in " ".join(result.stderr.split()), result.stderr
    assert "Traceback" not in result.stderr
    assert not out.exists() and not list(tmp_path.glob(".out*"))  # nothing half-written


def test_existing_out_refused_untouched(small_dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "taken"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    for args in (["import", "donkeycar", str(TUB)], ["import", "lerobot", str(LEROBOT)],
                 ["export", "lerobot", str(small_dataset)]):
        result = run_cli_here("data", *args, "--out", str(out))
        assert result.returncode != 0 and "already exists" in result.stderr, result.stderr
    assert [p.name for p in out.iterdir()] == ["keep.txt"] and not list(tmp_path.glob(".taken*"))


def test_export_failure_leaves_no_partial_folder(tmp_path: Path) -> None:
    import_donkeycar([TUB], tmp_path / "dk", DonkeyOptions(size=(61, 80)))  # odd height: no yuv420p video
    with pytest.raises(DrivelabError, match="even sizes"):
        export_lerobot(tmp_path / "dk", tmp_path / "le")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dk"]


def test_missing_extra_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "av", None)  # what `import av` sees when PyAV is not installed
    with pytest.raises(MissingExtraError) as info:
        pyav()
    assert "pip install 'drivelab[interop]'" in str(info.value) and "\n" not in str(info.value)
