"""Finding a run's dataset again from any working directory.

``config.yaml`` keeps ``data.path`` as the user wrote it, often relative to where training ran
(``demo_out/demo-…/data.zarr``), so from another directory it points nowhere. ``run.json``'s
provenance holds the absolute path and the dataset checksum (`drivelab.runs.provenance`); this
module answers with, in order: that absolute path; ``data.path`` as written, from here; and, for
a folder that moved with its runs (a demo folder copied elsewhere), the trailing parts of
``data.path`` under each folder above the run whose checksum matches the recorded one. Else one
line names the paths tried and the ``--dataset`` flag that points elsewhere.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from drivelab.data.store import DatasetStore
from drivelab.errors import DrivelabError
from drivelab.runs.folder import RunFolder
from drivelab.runs.provenance import dataset_checksum


class DatasetNotFound(DrivelabError):
    """A run's dataset is at none of the places it could be."""


def recorded_dataset(run: RunFolder) -> dict[str, Any]:
    """``run.json``'s provenance of the dataset: ``path`` (absolute) and ``checksum``, or {}."""
    found = (run.read_status().get("provenance") or {}).get("dataset")
    return found if isinstance(found, dict) else {}


def run_dataset(run: RunFolder, written: str | Path, flag: str = "--dataset") -> Path:
    """The folder of ``run``'s dataset (``written``: its config's ``data.path``), see module doc."""
    recorded = recorded_dataset(run)
    absolute = recorded.get("path")
    tried: list[Path] = []
    for candidate in ([Path(absolute)] if absolute else []) + [Path(written)]:
        if candidate.exists():
            return candidate
        tried.append(candidate)
    checksum = recorded.get("checksum")
    if checksum and not Path(written).is_absolute():
        moved = _moved_copy(run.path.resolve(), Path(written), str(checksum))
        if moved is not None:
            return moved
    shown = " nor ".join(dict.fromkeys(str(p) for p in tried))
    raise DatasetNotFound(f"{run.name}'s dataset is not at {shown}: pass {flag} PATH with that dataset "
                          "(or one recorded the same way)")


def _moved_copy(run_path: Path, written: Path, checksum: str) -> Path | None:
    """``written``'s trailing parts under a folder above the run, if that store has ``checksum``."""
    parts = written.parts
    for folder in run_path.parents:
        for start in range(len(parts)):
            candidate = folder.joinpath(*parts[start:])
            if (candidate / "zarr.json").is_file() and _checksum(candidate) == checksum:
                return candidate
    return None


def _checksum(path: Path) -> str | None:
    try:
        return dataset_checksum(DatasetStore.open(path))
    except DrivelabError:
        return None
