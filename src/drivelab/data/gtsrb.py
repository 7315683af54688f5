"""Import a GTSRB folder (the official layout, real or synthetic) into a drivelab dataset.

GTSRB ships one folder per class, ``Final_Training/Images/000NN/``, each with its
``GT-000NN.csv`` (``Filename;Width;Height;Roi.X1;Roi.Y1;Roi.X2;Roi.Y2;ClassId``). Its val split is
drawn by *track* (the ~30 views of one physical sign, files ``TTTTT_IIIII.ppm``), because views
of one sign in both train and val would make val accuracy measure memorisation. GTSRB's official
test set (``Final_Test/Images/GT-final_test.csv``), when present, becomes the test split.

Every CSV is parsed and checked here (file and line named on any error) before
`drivelab.data.importers.write_import` creates the store.
"""

from __future__ import annotations

import re
from pathlib import Path

from drivelab.data.importers import (
    IMAGE_SUFFIXES,
    ImageItem,
    ImportDataError,
    ImportOptions,
    ImportSummary,
    ProgressFn,
    check_paths,
    write_import,
)

CSV_COLUMNS = ["Filename", "Width", "Height", "Roi.X1", "Roi.Y1", "Roi.X2", "Roi.Y2", "ClassId"]
TEST_CSV = "GT-final_test.csv"
_TRACK = re.compile(r"^(\d+)_\d+$")

GTSRB_CLASS_NAMES = [
    "speed limit 20", "speed limit 30", "speed limit 50", "speed limit 60", "speed limit 70",
    "speed limit 80", "end of speed limit 80", "speed limit 100", "speed limit 120", "no passing",
    "no passing for vehicles over 3.5 t", "right-of-way at next intersection", "priority road",
    "yield", "stop", "no vehicles", "vehicles over 3.5 t prohibited", "no entry",
    "general caution", "dangerous curve left", "dangerous curve right", "double curve",
    "bumpy road", "slippery road", "road narrows on the right", "road work", "traffic signals",
    "pedestrians", "children crossing", "bicycles crossing", "beware of ice/snow",
    "wild animals crossing", "end of all speed and passing limits", "turn right ahead",
    "turn left ahead", "ahead only", "go straight or right", "go straight or left", "keep right",
    "keep left", "roundabout mandatory", "end of no passing",
    "end of no passing by vehicles over 3.5 t",
]


def _read_gt_csv(csv_path: Path, base: Path) -> list[tuple[int, ImageItem]]:
    """Parse one GT CSV into (line number, item) pairs; any malformed line is an error."""
    try:
        text = csv_path.read_text()
    except OSError as exc:
        raise ImportDataError(f"{csv_path}: cannot read ({exc.strerror or exc})") from exc
    except UnicodeDecodeError as exc:
        raise ImportDataError(
            f"{csv_path}: not a text CSV (byte {exc.start} is not UTF-8); expected the header "
            f"{';'.join(CSV_COLUMNS)}"
        ) from None
    lines = text.splitlines()
    if not lines or [c.strip() for c in lines[0].split(";")] != CSV_COLUMNS:
        raise ImportDataError(
            f"{csv_path} line 1: header must be {';'.join(CSV_COLUMNS)} (got {lines[0][:80]!r})"
            if lines else f"{csv_path}: empty file, expected the header {';'.join(CSV_COLUMNS)}"
        )
    items = []
    for lineno, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        parts = [p.strip() for p in line.split(";")]
        if len(parts) != len(CSV_COLUMNS):
            raise ImportDataError(
                f"{csv_path} line {lineno}: expected {len(CSV_COLUMNS)} fields separated by ';', "
                f"got {len(parts)} ({line[:80]!r})"
            )
        try:
            w, h, x1, y1, x2, y2, label = (int(p) for p in parts[1:])
        except ValueError:
            raise ImportDataError(
                f"{csv_path} line {lineno}: Width..ClassId must be integers ({line[:80]!r})"
            ) from None
        if not (0 <= x1 < x2 < w and 0 <= y1 < y2 < h):
            raise ImportDataError(
                f"{csv_path} line {lineno}: ROI ({x1},{y1})-({x2},{y2}) is empty or outside "
                f"the {w}x{h} image"
            )
        if label < 0:
            raise ImportDataError(f"{csv_path} line {lineno}: ClassId {label} is negative")
        match = _TRACK.match(Path(parts[0]).stem)
        group = f"{label}/{match.group(1)}" if match else f"{label}/{parts[0]}"
        items.append((lineno, ImageItem(base / parts[0], label, (x1, y1, x2, y2), group)))
    return items


def _find_gtsrb_root(path: Path) -> Path:
    """The folder holding ``Final_Training`` (the given one, or its ``GTSRB`` sub-folder)."""
    for cand in (path, path / "GTSRB"):
        if (cand / "Final_Training" / "Images").is_dir():
            return cand
    raise ImportDataError(
        f"{path} is not a GTSRB folder: expected {path}/Final_Training/Images/000NN/GT-000NN.csv "
        "(the official layout; `drivelab data synth-signs` writes a synthetic one)"
    )


def scan_gtsrb(path: Path) -> tuple[list[ImageItem], list[ImageItem], int]:
    """Training items, test items and the class count of a GTSRB folder, all CSVs checked."""
    root = _find_gtsrb_root(path)
    images = root / "Final_Training" / "Images"
    class_dirs = sorted(d for d in images.iterdir() if d.is_dir() and d.name.isdigit())
    if not class_dirs:
        raise ImportDataError(f"{images} holds no class folders 000NN")
    num_classes = max(int(d.name) for d in class_dirs) + 1
    train: list[ImageItem] = []
    for d in class_dirs:
        class_id = int(d.name)
        csv_path = d / f"GT-{d.name}.csv"
        if not csv_path.is_file():
            raise ImportDataError(f"{csv_path} is missing: every class folder needs its GT CSV")
        rows = _read_gt_csv(csv_path, d)
        if not rows:
            images = sum(1 for p in d.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            raise ImportDataError(
                f"{csv_path} lists no images (the folder holds {images} image file(s)): every "
                "class needs its training images listed"
            )
        for lineno, item in rows:
            if item.label != class_id:
                raise ImportDataError(
                    f"{csv_path} line {lineno}: ClassId {item.label} in the folder of class "
                    f"{class_id} (labels must match their folder, 0..{num_classes - 1})"
                )
            train.append(item)
    test: list[ImageItem] = []
    test_images = root / "Final_Test" / "Images"
    if test_images.is_dir():
        csv_path = next(
            (p for p in (test_images / TEST_CSV, root / "Final_Test" / TEST_CSV, root / TEST_CSV)
             if p.is_file()), None,
        )
        if csv_path is None:
            raise ImportDataError(
                f"{test_images / TEST_CSV} is missing: the test images need their labels "
                "(GTSRB ships them as GT-final_test.csv; remove Final_Test to import training only)"
            )
        for lineno, item in _read_gt_csv(csv_path, test_images):
            if item.label >= num_classes:
                raise ImportDataError(
                    f"{csv_path} line {lineno}: ClassId {item.label} is outside the "
                    f"{num_classes} training classes (0..{num_classes - 1})"
                )
            test.append(item)
    return train, test, num_classes


def gtsrb_class_names(num_classes: int) -> list[str]:
    """Official sign names for the ids GTSRB defines, ``class NN`` beyond them."""
    return [GTSRB_CLASS_NAMES[i] if i < len(GTSRB_CLASS_NAMES) else f"class {i:02d}" for i in range(num_classes)]


def import_gtsrb(
    path: str | Path, out: str | Path, options: ImportOptions = ImportOptions(),
    on_progress: ProgressFn | None = None,
) -> ImportSummary:
    """Import a GTSRB folder (official layout, real or synthetic) into a new dataset at ``out``."""
    path, out = Path(path), Path(out)
    check_paths(path, out, options)
    train, test, num_classes = scan_gtsrb(path)
    root = _find_gtsrb_root(path)
    readme = root / "README.txt"
    synthetic = readme.is_file() and "SYNTHETIC" in readme.read_text(errors="replace")[:200]
    source = "synthetic-gtsrb" if synthetic else "gtsrb"
    return write_import(path, out, source, gtsrb_class_names(num_classes), train, test, options, on_progress)
