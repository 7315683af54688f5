"""Closed-loop results kept with the run they judge: ``<run>/eval/closed_loop_<time>_batch<N>.json``.

`drivelab eval --json FILE` writes wherever the user asks; a model card and `drivelab runs` need
to find a run's driving score without being told, so every closed-loop evaluation of a run also
leaves a copy in the run folder (``eval/``, beside the offline results ``eval/offline_*/``).
Nothing is overwritten: each evaluation gets its own file.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from drivelab.runs.folder import RunFolder, resolve_checkpoint

EVALS = "eval"
PREFIX = "closed_loop_"


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
    path.write_text(json.dumps(record, indent=2) + "\n")
    return path


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
