"""Evaluations kept with the run they judge: the run folder's ``eval/``, owned here.

`drivelab eval --json FILE` writes wherever the user asks; a model card and `drivelab runs` need
to find a run's driving score without being told, so every closed-loop evaluation of a run also
leaves a copy in the run folder, and every offline scoring keeps its metrics (and the figures
the evaluator draws) there too::

    eval/closed_loop_<time>_batch<N>[_k].json
    eval/offline_<split>_batch<N>[_<dataset>][_groups-<map>][_k]/offline.json, confusion_<head>.png

Nothing is overwritten: each evaluation gets its own file or folder (a repeat gets ``_2``, ...),
written through `drivelab.outputs` (whole or not at all).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from drivelab.outputs import write_json
from drivelab.runs.folder import RunFolder, resolve_checkpoint

EVALS = "eval"
PREFIX = "closed_loop_"
OFFLINE_FILE = "offline.json"


def save_run_eval(run_ref: str, runs_root: Path, payload: dict[str, Any]) -> Path:
    """Store one evaluation of ``run_ref`` (``<run>[@batch]``) in its run folder; returns the file.

    Video paths are made absolute so the card finds them from any working directory.
    """
    run, batch, _ = resolve_checkpoint(run_ref, runs_root)
    folder = run.path / EVALS
    folder.mkdir(parents=True, exist_ok=True)
    drivers = []
    for driver in payload.get("drivers", []):
        videos = [str(Path(v).resolve()) for v in driver.get("videos", [])]
        drivers.append({**driver, "videos": videos})
    record = {
        **payload,
        "drivers": drivers,
        "run": run.name,
        "batch": batch,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    stamp = time.strftime("%Y%m%dT%H%M%S")
    path = folder / f"{PREFIX}{stamp}_batch{batch}.json"
    suffix = 1
    while path.exists():  # two evaluations within a second: keep both
        suffix += 1
        path = folder / f"{PREFIX}{stamp}_batch{batch}_{suffix}.json"
    return write_json(path, record, flag="eval")


def save_offline_eval(run: RunFolder, batch: int, split: str, dataset: Path | None, group_map: Path | None,
                      metrics: dict[str, Any]) -> Path:
    """Keep one offline scoring of ``run`` at ``batch``: a new folder under ``eval/`` holding
    ``offline.json``; returns the folder (the evaluator draws its figures into it).

    The folder is claimed with ``mkdir``, which is atomic: a repeat, or two scorings at once,
    get ``..._2``, ``..._3``, never the earlier one's folder.
    """
    name = f"offline_{split}_batch{batch}"
    if dataset is not None:
        name += f"_{Path(dataset).stem}"
    if group_map is not None:
        name += f"_groups-{group_map.stem}"
    (run.path / EVALS).mkdir(exist_ok=True)
    target, repeat = run.path / EVALS / name, 1
    while True:
        try:
            target.mkdir()
            break
        except FileExistsError:
            repeat += 1
            target = run.path / EVALS / f"{name}_{repeat}"
    write_json(target / OFFLINE_FILE, metrics, flag="eval")
    return target


def offline_confusion(folder: Path, output: str) -> Path:
    """The confusion matrix figure of head ``output`` in an offline evaluation's folder."""
    return folder / f"confusion_{output}.png"


def run_evals(run: RunFolder) -> list[dict[str, Any]]:
    """Every saved evaluation of the run, oldest first (unreadable files are skipped)."""
    folder = run.path / EVALS
    found = []
    for path in sorted(folder.glob(f"{PREFIX}*.json")) if folder.is_dir() else []:
        try:
            record = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        record["file"] = str(path)
        found.append(record)
    return sorted(found, key=lambda r: (str(r.get("created", "")), r["file"]))


def policy_report(record: dict[str, Any]) -> dict[str, Any] | None:
    """The run's own driver in a saved evaluation (not a baseline)."""
    for driver in record.get("drivers", []):
        if driver.get("driver") not in ("expert", "random"):
            return driver
    return None


def latest_eval(run: RunFolder) -> dict[str, Any] | None:
    """The most recent saved evaluation that drove the run itself."""
    for record in reversed(run_evals(run)):
        if policy_report(record) is not None:
            return record
    return None
