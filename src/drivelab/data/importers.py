"""Import image-classification sets (ImageFolder; GTSRB via `gtsrb`) into the dataset store.

Why the driving store: one on-disk format means `data info`, `data verify`, the loader's
splits and statistics all work for traffic signs too, with no second storage code path.

Store layout chosen for a classification set (everything else as in `drivelab.data.store`)::

    root attrs      task: classification, num_classes, class_names [C], source
                    (gtsrb | synthetic-gtsrb | imagefolder), class_counts {train,val,test: [C]},
                    image_size, roi_crop, val_fraction, seed, skipped_images, label_array,
                    env_id = source, fps = 0 (no time axis), telemetry = none
    episode         the images of ONE class in ONE split (at most EPISODE_IMAGES of them; a
                    bigger class is cut into several episodes). Attrs: class_id, class_name,
                    split, files (paths relative to the imported folder, for tracing errors)
        frames          uint8 [N, S, S, 3]   resized to --size (after the optional ROI crop)
        actions/class   float32 [N, 1]       the class id (floats because the store's label
                                             arrays are float32; ids are exact below 2**24)
        reward          float32 [N]          zeros (unused)
        perturbed       bool [N]             false (unused)

Splits go through `DatasetStore.assign_splits`, which works on whole episodes; that is why
train, val and test images of a class are written as separate episodes. The val split is
stratified: the same fraction of every class, drawn by whole groups of images (GTSRB's tracks,
see `drivelab.data.gtsrb`); a class whose groups are all longer than its val share falls back to
single images.

This module holds what every layout shares (the items, options and summary, the checks before
any work, the split and the writing) and the ImageFolder layout; `drivelab.data.gtsrb` reads
GTSRB's CSVs into the same items.

Bad input is a one-line `DrivelabError`: a missing or malformed CSV (file and line named), a
label outside the class count, an ImageFolder with fewer than two classes, an existing
``--out``. Images that fail to decode are skipped and counted, or stop the import, per
``on_bad_image``. All CSVs are parsed before the store is created; the store is written through
`drivelab.data.dataset_out`, the path every importer shares, so an import that still stops
half-way (a bad image with ``stop``, Ctrl-C, a full disk) removes the ``--out`` it created.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from drivelab.data.dataset_out import check_new_dataset, dataset_out
from drivelab.data.records import DatasetMeta, EpisodeRecord
from drivelab.errors import DrivelabError
from drivelab.sim.base import SignalSpec

EPISODE_IMAGES = 1024  # images per episode: bounds the memory one write needs
CHUNK_IMAGES = 256  # images per Zarr chunk
IMAGE_SUFFIXES = {".ppm", ".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}

ProgressFn = Callable[[int, int, int], None]


class ImportDataError(DrivelabError):
    """An import that cannot go on: bad layout, bad CSV, bad label, or an image that won't decode."""


@dataclass(frozen=True)
class ImageItem:
    """One image to import: its file, its class, the ROI (inclusive, GTSRB style) and its group."""

    path: Path
    label: int
    roi: tuple[int, int, int, int] | None = None
    group: str = ""  # images sharing a group (a GTSRB track) always land in the same split


@dataclass(frozen=True)
class ImportOptions:
    """Knobs shared by both importers."""

    size: int = 48
    roi: bool = False
    val_fraction: float = 0.1
    seed: int = 0
    on_bad_image: str = "skip"  # skip | stop


@dataclass
class ImportSummary:
    """What an import wrote: per-class counts per split and how many images were skipped."""

    path: Path
    source: str
    class_names: list[str]
    counts: dict[str, list[int]]
    skipped: int = 0
    skipped_files: list[str] = field(default_factory=list)
    episodes: int = 0

    @property
    def images(self) -> int:
        return sum(sum(v) for v in self.counts.values())


# --------------------------------------------------------------------------- ImageFolder
def scan_imagefolder(path: Path) -> tuple[list[ImageItem], list[str]]:
    """Items and class names (sorted folder names) of a one-folder-per-class layout."""
    class_dirs = sorted(d for d in path.iterdir() if d.is_dir() and not d.name.startswith("."))
    if len(class_dirs) < 2:
        raise ImportDataError(
            f"{path} has {len(class_dirs)} class folder(s): an ImageFolder needs one sub-folder "
            "per class and at least 2 classes"
        )
    items = []
    for label, d in enumerate(class_dirs):
        files = sorted(p for p in d.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise ImportDataError(f"class folder {d} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
        items += [ImageItem(p, label, None, str(p)) for p in files]
    return items, [d.name for d in class_dirs]


def import_imagefolder(
    path: str | Path, out: str | Path, options: ImportOptions = ImportOptions(),
    on_progress: ProgressFn | None = None,
) -> ImportSummary:
    """Import an ImageFolder (``PATH/<class name>/*.png``) into a new dataset at ``out``."""
    path, out = Path(path), Path(out)
    check_paths(path, out, options)
    if options.roi:
        raise ImportDataError("--roi needs ROI boxes, which only the GTSRB CSVs carry")
    items, names = scan_imagefolder(path)
    return write_import(path, out, "imagefolder", names, items, [], options, on_progress)


# --------------------------------------------------------------------------- shared
def check_paths(path: Path, out: Path, options: ImportOptions) -> None:
    """Fail before any work: a missing input, an existing output, or a nonsensical option."""
    check_new_dataset(out, ImportDataError)
    if not path.is_dir():
        raise ImportDataError(f"{path} is not a folder")
    if not 0.0 <= options.val_fraction < 1.0:
        raise ImportDataError(f"--val-fraction {options.val_fraction}: use a value in [0, 1)")
    if options.size < 8:
        raise ImportDataError(f"--size {options.size}: use at least 8 px")
    if options.on_bad_image not in ("skip", "stop"):
        raise ImportDataError(f"--on-bad-image {options.on_bad_image!r}: use skip or stop")


def stratified_val(items: list[ImageItem], fraction: float, seed: int) -> set[Path]:
    """Paths of the val images: ``fraction`` of every class, whole groups (tracks) at a time.

    A class whose tracks are all too long for its val share (e.g. two tracks of 5 images and a
    10 % split) falls back to single images: a leaky val split beats none or a half-sized one.
    """
    rng = np.random.default_rng(seed)
    by_class: dict[int, dict[str, list[ImageItem]]] = {}
    for it in items:
        by_class.setdefault(it.label, {}).setdefault(it.group, []).append(it)
    val: set[Path] = set()
    for label in sorted(by_class):
        groups = by_class[label]
        n = sum(len(g) for g in groups.values())
        target = round(fraction * n)
        if target == 0 or n < 2:
            continue
        chosen = _pick_groups(groups, target, rng)
        if not chosen:
            singles = {str(it.path): [it] for g in groups.values() for it in g}
            chosen = _pick_groups(singles, target, rng)
        for group in chosen:
            val.update(it.path for it in group)
    return val


def _pick_groups(
    groups: dict[str, list[ImageItem]], target: int, rng: np.random.Generator
) -> list[list[ImageItem]]:
    """Random groups whose sizes add up to about ``target`` (at most 1.5x), one always left over."""
    budget = max(target, int(np.ceil(1.5 * target)))
    keys = sorted(groups)
    chosen: list[list[ImageItem]] = []
    taken = 0
    for k in rng.permutation(len(keys)):
        if taken >= target or len(chosen) >= len(groups) - 1:  # keep one group for train
            break
        group = groups[keys[int(k)]]
        if taken + len(group) <= budget:
            chosen.append(group)
            taken += len(group)
    return chosen


def load_image(item: ImageItem, size: int, roi: bool) -> np.ndarray:
    """Decode, optionally crop to the ROI, and resize one image to uint8 [size, size, 3]."""
    with Image.open(item.path) as img:
        img.load()
        rgb = img.convert("RGB")
    if roi and item.roi is not None:
        x1, y1, x2, y2 = item.roi
        box = (min(x1, rgb.width - 1), min(y1, rgb.height - 1), min(x2 + 1, rgb.width), min(y2 + 1, rgb.height))
        rgb = rgb.crop(box)
    return np.asarray(rgb.resize((size, size), Image.Resampling.BILINEAR, reducing_gap=2.0), np.uint8)


def write_import(
    path: Path, out: Path, source: str, class_names: list[str], train: list[ImageItem],
    test: list[ImageItem], options: ImportOptions, on_progress: ProgressFn | None,
) -> ImportSummary:
    """Create the store and write one episode per (class, split, chunk); removed on failure."""
    num_classes = len(class_names)
    for it in (*train, *test):
        if not 0 <= it.label < num_classes:  # scans check this; kept as the store's invariant
            raise ImportDataError(f"{it.path}: label {it.label} is outside the {num_classes} classes")
    plan = _episode_plan(train, test, options, num_classes)
    meta = _classification_meta(source, options.size, num_classes)
    summary = ImportSummary(out, source, class_names, {k: [0] * num_classes for k in ("train", "val", "test")})
    with dataset_out(out, meta, ImportDataError) as ds:
        splits: dict[str, list[int]] = {"val": [], "test": []}
        for done, (split, label, members) in enumerate(plan, start=1):
            frames, kept = _decode(members, path, options, summary)
            if kept:
                n = len(kept)
                index = ds.add(EpisodeRecord(
                    frames=np.stack(frames),
                    telemetry={},
                    actions={"class": np.full((n, 1), label, np.float32)},
                    reward=np.zeros(n, np.float32),
                    perturbed=np.zeros(n, bool),
                    info={"class_id": label, "class_name": class_names[label], "split": split,
                          "files": [_rel(it.path, path) for it in kept]},
                ))
                if split != "train":
                    splits[split].append(index)
                summary.counts[split][label] += n
            if on_progress is not None:
                on_progress(len(kept), done, len(plan))
        summary.episodes = ds.episodes
        if sum(summary.counts["train"]) == 0:
            raise ImportDataError(f"{path}: no training image could be decoded (nothing was written)")
        ds.store.assign_splits(val=splits["val"], test=splits["test"])
        ds.store.update_attrs(**_dataset_attrs(path, summary, options))
    return summary


def _episode_plan(
    train: list[ImageItem], test: list[ImageItem], options: ImportOptions, num_classes: int
) -> list[tuple[str, int, list[ImageItem]]]:
    """(split, class, images) of every episode to write: at most EPISODE_IMAGES images each."""
    val_paths = stratified_val(train, options.val_fraction, options.seed)
    plan: list[tuple[str, int, list[ImageItem]]] = []
    for split, items in (("train", [i for i in train if i.path not in val_paths]),
                         ("val", [i for i in train if i.path in val_paths]), ("test", test)):
        for label in range(num_classes):
            members = [i for i in items if i.label == label]
            for start in range(0, len(members), EPISODE_IMAGES):
                plan.append((split, label, members[start : start + EPISODE_IMAGES]))
    return plan


def _classification_meta(source: str, size: int, num_classes: int) -> DatasetMeta:
    """The dataset metadata of a classification set: square frames, one class-id label array."""
    return DatasetMeta(
        env_id=source, fps=0.0, frame_shape=(size, size, 3), telemetry=(),
        actions=(SignalSpec("class", unit="class id", size=1, low=0.0, high=float(num_classes - 1),
                            description="integer class id stored as float32"),),
        chunk_frames=CHUNK_IMAGES,
    )


def _decode(
    members: list[ImageItem], path: Path, options: ImportOptions, summary: ImportSummary
) -> tuple[list[np.ndarray], list[ImageItem]]:
    """The decoded frames of one episode's images and the items kept; a bad image is counted
    in ``summary`` (``on_bad_image: skip``) or stops the import (``stop``)."""
    frames, kept = [], []
    for it in members:
        try:
            frames.append(load_image(it, options.size, options.roi))
            kept.append(it)
        except (OSError, UnidentifiedImageError, ValueError) as exc:
            rel = _rel(it.path, path)
            if options.on_bad_image == "stop":
                raise ImportDataError(
                    f"{rel}: cannot decode image ({type(exc).__name__}); "
                    "--on-bad-image skip imports the rest (nothing was written)"
                ) from exc
            summary.skipped += 1
            summary.skipped_files.append(rel)
    return frames, kept


def _rel(p: Path, base: Path) -> str:
    try:
        return str(p.relative_to(base))
    except ValueError:
        return str(p)


def _dataset_attrs(path: Path, summary: ImportSummary, options: ImportOptions) -> dict[str, Any]:
    return {
        "task": "classification",
        "source": summary.source,
        "source_path": str(path.resolve()),
        "num_classes": len(summary.class_names),
        "class_names": summary.class_names,
        "class_counts": summary.counts,
        "label_array": "actions/class",
        "image_size": options.size,
        "roi_crop": options.roi,
        "val_fraction": options.val_fraction,
        "seed": options.seed,
        "skipped_images": summary.skipped,
    }
