"""Traffic-sign import: real GTSRB-format files written by the synthesizer, read back from the store.

Everything runs on small sets (5 classes x 6 images) written into tmp dirs, so the importer is
tested against the official file layout without the real download.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from conftest import run_cli_here
from drivelab.data.gtsrb import import_gtsrb
from drivelab.data.importers import ImportOptions, import_imagefolder
from drivelab.data.inspect import verify_dataset
from drivelab.data.store import DatasetStore
from drivelab.data.synth_signs import synthesize_signs

CLASSES, PER_CLASS = 5, 6


@pytest.fixture(scope="module")
def signs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A synthetic GTSRB folder: 5 classes x 6 training images, 2 test images per class."""
    out = tmp_path_factory.mktemp("signs") / "gtsrb"
    synthesize_signs(out, classes=CLASSES, per_class=PER_CLASS, seed=3, size=48)
    return out


def _copy(src: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "copy"
    shutil.copytree(src, dst)
    return dst


def _labels_by_split(store: DatasetStore) -> dict[str, list[int]]:
    found: dict[str, list[int]] = {"train": [], "val": [], "test": []}
    for e in store.episodes():
        labels = np.asarray(store.episode(e.index)["actions/class"][:])[:, 0]
        assert np.all(labels == e.attrs["class_id"])  # one class per episode
        found[store.split_of(e.index)] += labels.astype(int).tolist()
    return found


def test_synth_writes_official_layout_deterministically(signs: Path, tmp_path: Path) -> None:
    csv = signs / "Final_Training" / "Images" / "00003" / "GT-00003.csv"
    lines = csv.read_text().splitlines()
    assert lines[0] == "Filename;Width;Height;Roi.X1;Roi.Y1;Roi.X2;Roi.Y2;ClassId"
    assert len(lines) == 1 + PER_CLASS and all(line.endswith(";3") for line in lines[1:])
    test_lines = (signs / "Final_Test" / "Images" / "GT-final_test.csv").read_text().splitlines()
    assert len(test_lines) == 1 + CLASSES * 2
    assert "SYNTHETIC" in (signs / "README.txt").read_text()
    sizes = {int(line.split(";")[1]) for line in lines[1:]}
    assert min(sizes) >= 16 and max(sizes) <= 60 and len(sizes) > 1  # sizes vary around --size
    again = tmp_path / "again"
    synthesize_signs(again, classes=CLASSES, per_class=PER_CLASS, seed=3, size=48)
    for name in ("Final_Training/Images/00001/00000_00002.ppm", "Final_Test/Images/00004.ppm"):
        assert (again / name).read_bytes() == (signs / name).read_bytes()


def test_gtsrb_round_trip(signs: Path, tmp_path: Path) -> None:
    summary = import_gtsrb(signs, tmp_path / "ds.zarr", ImportOptions(size=24, val_fraction=0.2, seed=1))
    store = DatasetStore.open(tmp_path / "ds.zarr")
    attrs = store.attrs
    assert attrs["task"] == "classification" and attrs["source"] == "synthetic-gtsrb"
    assert attrs["num_classes"] == CLASSES
    assert attrs["class_names"][:3] == ["speed limit 20", "speed limit 30", "speed limit 50"]
    assert store.meta.frame_shape == (24, 24, 3)
    labels = _labels_by_split(store)
    for split in ("train", "val", "test"):
        counts = np.bincount(labels[split], minlength=CLASSES).tolist()
        assert counts == attrs["class_counts"][split] == summary.counts[split]
    assert attrs["class_counts"]["test"] == [2] * CLASSES
    assert all(v >= 1 for v in attrs["class_counts"]["val"])  # stratified: every class in val
    assert [a + b for a, b in zip(attrs["class_counts"]["train"], attrs["class_counts"]["val"], strict=True)] \
        == [PER_CLASS] * CLASSES
    report = verify_dataset(store)
    assert report.ok and report.frames == CLASSES * (PER_CLASS + 2)
    frames = np.asarray(store.episode(store.episodes()[0].index)["frames"][:])
    assert frames.dtype == np.uint8 and frames.std() > 10  # real pictures, not blanks


def test_val_split_keeps_tracks_whole(tmp_path: Path) -> None:
    """Views of one physical sign (a track) in both train and val would inflate val accuracy."""
    src = tmp_path / "tracks"
    synthesize_signs(src, classes=2, per_class=20, seed=5, size=32, test_per_class=0)
    import_gtsrb(src, tmp_path / "ds.zarr", ImportOptions(size=16, val_fraction=0.25, seed=2))
    store = DatasetStore.open(tmp_path / "ds.zarr")
    tracks: dict[str, set[str]] = {"train": set(), "val": set()}
    for e in store.episodes():
        tracks[store.split_of(e.index)] |= {f"{e.attrs['class_id']}/{f.split('/')[-1][:5]}" for f in e.attrs["files"]}
    assert tracks["val"] and tracks["train"] and not tracks["val"] & tracks["train"]
    assert store.attrs["class_counts"]["val"] == [5, 5]  # one track of 5 per class


def test_roi_crop_changes_frames(signs: Path, tmp_path: Path) -> None:
    plain = import_gtsrb(signs, tmp_path / "plain.zarr", ImportOptions(size=24, val_fraction=0.0))
    cropped = import_gtsrb(signs, tmp_path / "roi.zarr", ImportOptions(size=24, roi=True, val_fraction=0.0))
    assert plain.counts == cropped.counts
    a = np.asarray(DatasetStore.open(plain.path).episode(0)["frames"][:], np.float32)
    b = np.asarray(DatasetStore.open(cropped.path).episode(0)["frames"][:], np.float32)
    assert a.shape == b.shape and np.abs(a - b).mean() > 5.0
    assert DatasetStore.open(cropped.path).attrs["roi_crop"] is True


def test_imagefolder_import(signs: Path, tmp_path: Path) -> None:
    root = tmp_path / "folder"
    for class_id, name in ((0, "speed20"), (4, "speed70"), (2, "speed50")):
        shutil.copytree(signs / "Final_Training" / "Images" / f"{class_id:05d}", root / name,
                        ignore=shutil.ignore_patterns("*.csv"))
    summary = import_imagefolder(root, tmp_path / "if.zarr", ImportOptions(size=16, val_fraction=0.34))
    store = DatasetStore.open(tmp_path / "if.zarr")
    assert store.attrs["class_names"] == ["speed20", "speed50", "speed70"]  # sorted folder names
    assert store.attrs["source"] == "imagefolder"
    assert summary.counts["val"] == [2, 2, 2] and summary.counts["train"] == [4, 4, 4]
    assert summary.counts["test"] == [0, 0, 0]
    labels = _labels_by_split(store)
    assert sorted(labels["val"]) == [0, 0, 1, 1, 2, 2]


def test_cli_import_and_skip_bad_image(signs: Path, tmp_path: Path) -> None:
    src = _copy(signs, tmp_path)
    (src / "Final_Training" / "Images" / "00002" / "00000_00001.ppm").write_bytes(b"P6 not really")
    result = run_cli_here("data", "import", "gtsrb", str(src), "--out", str(tmp_path / "ds.zarr"), "--size", "16")
    assert result.returncode == 0, result.stderr
    assert "skipped 1 image" in result.stderr and "00000_00001.ppm" in result.stderr
    attrs = DatasetStore.open(tmp_path / "ds.zarr").attrs
    assert attrs["skipped_images"] == 1
    assert attrs["class_counts"]["train"][2] + attrs["class_counts"]["val"][2] == PER_CLASS - 1


def _one_error_line(result: subprocess.CompletedProcess, *needles: str) -> str:
    """A user mistake: exit 2 and exactly one `error:` line naming what is wrong."""
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), lines
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def test_cli_bad_inputs(signs: Path, tmp_path: Path) -> None:
    images = "Final_Training/Images"
    out = tmp_path / "out.zarr"

    src = _copy(signs, tmp_path / "missing")
    (src / images / "00001" / "GT-00001.csv").unlink()
    _one_error_line(run_cli_here("data", "import", "gtsrb", str(src), "--out", str(out)), "GT-00001.csv", "missing")

    src = _copy(signs, tmp_path / "malformed")
    csv = src / images / "00003" / "GT-00003.csv"
    lines = csv.read_text().splitlines()
    lines[2] = "00000_00001.ppm;40;40;5"
    csv.write_text("\n".join(lines) + "\n")
    _one_error_line(run_cli_here("data", "import", "gtsrb", str(src), "--out", str(out)), "GT-00003.csv", "line 3")

    src = _copy(signs, tmp_path / "label")
    csv = src / "Final_Test" / "Images" / "GT-final_test.csv"
    lines = csv.read_text().splitlines()
    lines[4] = lines[4].rsplit(";", 1)[0] + ";9"
    csv.write_text("\n".join(lines) + "\n")
    _one_error_line(run_cli_here("data", "import", "gtsrb", str(src), "--out", str(out)),
                    "GT-final_test.csv", "line 5", "ClassId 9")

    src = _copy(signs, tmp_path / "stop")
    (src / images / "00000" / "00001_00000.ppm").write_bytes(b"garbage")
    _one_error_line(run_cli_here("data", "import", "gtsrb", str(src), "--out", str(out), "--on-bad-image", "stop"),
                    "00001_00000.ppm", "cannot decode")
    assert not out.exists()  # the half-written store is removed

    one = tmp_path / "one_class" / "stop"
    shutil.copytree(signs / images / "00000", one)
    _one_error_line(run_cli_here("data", "import", "imagefolder", str(one.parent), "--out", str(out)),
                    "1 class folder")

    out.mkdir()
    (out / "keep.txt").write_text("mine")
    _one_error_line(run_cli_here("data", "import", "gtsrb", str(signs), "--out", str(out)), "already exists")
    _one_error_line(run_cli_here("data", "synth-signs", "--out", str(out), "--classes", "3"), "already exists")
    assert (out / "keep.txt").read_text() == "mine"
