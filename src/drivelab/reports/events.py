"""Scalar curves from a drivelab run or from any TensorBoard log folder, as one shape.

Curves come from two kinds of sources and must line up on one plot:

- a **drivelab run folder** (or ``<line>_vN`` under a runs root): ``metrics.jsonl`` (and the
  watch player's ``watch.jsonl``) through `read_metrics`, which already resolves resumed periods
  (the latest period wins for a batch), so a killed-and-resumed run draws one curve;
- **TensorBoard event files** written by anything: PyTorch's ``SummaryWriter`` stores plain
  ``scalars``, while Keras/TensorFlow 2 (Charles's logs) stores each value as a rank-0
  ``tensors`` summary; both are read, tensors decoded with ``make_ndarray``. A folder may hold
  event files in subfolders (Keras writes ``train/`` and ``validation/``): their tags get the
  subfolder as a prefix (``validation/epoch_loss``), the top folder's tags keep their names.

Tags are matched exactly first, then by suffix after ``.`` or ``/``, so ``steering_loss`` finds
both drivelab's ``steering_loss`` and Keras's ``ModelOutputs.steering_loss``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from drivelab.errors import DrivelabError
from drivelab.runs.folder import VERSION_PATTERN
from drivelab.runs.metrics import read_metrics

#: Row keys of ``metrics.jsonl`` that are bookkeeping, not curves.
ROW_KEYS = ("batch", "period", "time", "epoch")


class ReportError(DrivelabError):
    """A report input (run, log folder, tag) that does not exist or cannot be read."""


@dataclass(frozen=True)
class Series:
    """One scalar curve: values at increasing steps (batches for drivelab runs)."""

    tag: str
    steps: np.ndarray  # int64 [N], increasing
    values: np.ndarray  # float64 [N]

    def __len__(self) -> int:
        return int(self.steps.size)


@dataclass(frozen=True)
class Source:
    """Where a set of curves came from: a run folder or a TensorBoard log folder/file."""

    path: Path
    kind: str  # "run" or "tensorboard"
    label: str  # default legend name

    def read(self) -> dict[str, Series]:
        return read_run_series(self.path) if self.kind == "run" else read_tensorboard(self.path)


def is_run_folder(path: Path) -> bool:
    return (path / "config.yaml").is_file() and (path / "run.json").is_file()


def resolve_source(ref: str | Path, runs_root: Path | None = None) -> Source:
    """A run folder, ``<line>_vN`` under ``runs_root``, a log folder or a single event file."""
    path = Path(ref)
    if not path.exists() and runs_root is not None:
        match = VERSION_PATTERN.match(str(ref))
        if match:
            path = runs_root / match.group("line") / str(ref)
    if not path.exists():
        where = f" (nor {runs_root}/<line>/{ref})" if runs_root is not None else ""
        raise ReportError(
            f"{ref} does not exist{where}: pass a run folder, <line>_vN, a TensorBoard log folder "
            "or an event file"
        )
    if path.is_dir() and is_run_folder(path):
        return Source(path, "run", path.name)
    if path.is_file() or event_files(path):
        label = path.name if path.is_dir() else path.name.split("events.out.tfevents")[0].rstrip("_-.") or path.name
        return Source(path, "tensorboard", label)
    raise ReportError(
        f"{path} holds no drivelab run (config.yaml + run.json) and no TensorBoard event files "
        "(*tfevents*)"
    )


def event_files(folder: Path) -> list[Path]:
    """TensorBoard event files anywhere under ``folder`` (TensorBoard's own test: name has 'tfevents')."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.rglob("*") if p.is_file() and "tfevents" in p.name)


def read_run_series(run_path: Path) -> dict[str, Series]:
    """Curves of a drivelab run from its ``metrics.jsonl`` (+ ``watch.jsonl``)."""
    columns: dict[str, dict[int, float]] = {}
    for row in read_metrics(run_path / "metrics.jsonl"):
        batch = int(row["batch"])
        for key, value in row.items():
            if key in ROW_KEYS or isinstance(value, bool):
                continue
            number = _as_number(value)
            if number is not None:
                columns.setdefault(key, {})[batch] = number
    return {tag: _series(tag, points) for tag, points in columns.items()}


def _as_number(value: object) -> float | None:
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str) and value in ("nan", "inf", "-inf"):  # non-finite, logged as text
        return float(value)
    return None


def _series(tag: str, points: dict[int, float]) -> Series:
    steps = np.array(sorted(points), dtype=np.int64)
    return Series(tag, steps, np.array([points[int(s)] for s in steps], dtype=np.float64))


def read_tensorboard(path: Path) -> dict[str, Series]:
    """Scalar and rank-0 tensor summaries of a log folder (recursively) or one event file."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    if path.is_file():
        groups = {"": [path]}
    else:
        groups = {}
        for file in event_files(path):
            rel = file.parent.relative_to(path).as_posix()
            groups.setdefault("" if rel == "." else rel, []).append(file)
    found: dict[str, Series] = {}
    for prefix, files in sorted(groups.items()):
        target = files[0] if path.is_file() else (path / prefix if prefix else path)
        accumulator = EventAccumulator(str(target), size_guidance={"scalars": 0, "tensors": 0})
        try:
            accumulator.Reload()
        except Exception as exc:  # a corrupt or foreign file: say which, in one line
            raise ReportError(f"cannot read TensorBoard events in {target}: {exc}") from None
        tags = accumulator.Tags()
        for tag in tags.get("scalars", []):
            points = {int(e.step): float(e.value) for e in accumulator.Scalars(tag)}
            found[_prefixed(prefix, tag)] = _series(_prefixed(prefix, tag), points)
        for tag in tags.get("tensors", []):
            points = {}
            for event in accumulator.Tensors(tag):
                value = _scalar_tensor(event.tensor_proto)
                if value is None:
                    break  # not a scalar summary (e.g. Keras's model config text)
                points[int(event.step)] = value
            else:
                if points:
                    found[_prefixed(prefix, tag)] = _series(_prefixed(prefix, tag), points)
    return found


def _prefixed(prefix: str, tag: str) -> str:
    return f"{prefix}/{tag}" if prefix else tag


def _scalar_tensor(proto: object) -> float | None:
    """The value of a one-element numeric tensor summary, else None."""
    from tensorboard.util import tensor_util

    try:
        array = tensor_util.make_ndarray(proto)
    except (TypeError, ValueError):
        return None
    if array.size != 1 or not np.issubdtype(array.dtype, np.number):
        return None
    return float(array.reshape(-1)[0])


def find_tag(series: dict[str, Series], tag: str, source: str) -> Series:
    """The curve named ``tag``: exact name, else the one tag ending in ``.tag`` or ``/tag``."""
    if tag in series:
        return series[tag]
    matches = sorted(name for name in series if name.endswith((f".{tag}", f"/{tag}")))
    if len(matches) == 1:
        return series[matches[0]]
    if len(matches) > 1:
        raise ReportError(f"tag {tag!r} is ambiguous in {source}: name one of {', '.join(matches)}")
    available = ", ".join(sorted(series)) or "none"
    raise ReportError(f"tag {tag!r} not found in {source}; available tags: {available}")


def finite(series: Series) -> Series:
    """The curve without NaN/inf points (a diverged step must not hide the rest of a plot)."""
    keep = np.isfinite(series.values)
    return Series(series.tag, series.steps[keep], series.values[keep])


def best_value(series: Series) -> tuple[int, float] | None:
    """(step, value) of the curve's minimum over finite points."""
    clean = finite(series)
    if not len(clean):
        return None
    index = int(np.argmin(clean.values))
    return int(clean.steps[index]), float(clean.values[index])
