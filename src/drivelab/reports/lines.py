"""Model lines and their versions under a runs root, with the status of each version.

A line (``runs/<line>/``) is a family of versions (``<line>_v1``, ``_v2`` ...), the way Charles
kept ``model_0004_inceptionresnetv2_v1..v3``. The status of a version answers the questions one
asks before opening a card: how far it trained, when it last trained, how low its validation loss
got, and how it drives. Everything is read from the run folder; nothing here writes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from drivelab.reports.events import ReportError, Series, best_value, is_run_folder, read_run_series
from drivelab.runs.checkpoints import list_checkpoints
from drivelab.runs.evals import latest_eval, policy_report
from drivelab.runs.folder import VERSION_PATTERN, RunFolder


@dataclass
class VersionStatus:
    """One version of a line as `drivelab runs` lists it."""

    run: RunFolder
    status: str
    batches: int
    checkpoints: list[int]
    periods: list[dict[str, Any]]
    best_val: tuple[int, float] | None  # (batch, val/loss)
    driving: dict[str, Any] | None  # latest closed-loop result of the run itself
    watch_score: tuple[int, float] | None  # (batch, watch/score) of the last watched checkpoint
    info: dict[str, Any] = field(default_factory=dict)  # run.json

    @property
    def name(self) -> str:
        return self.run.name

    @property
    def last_period(self) -> dict[str, Any] | None:
        return self.periods[-1] if self.periods else None


@dataclass
class LineStatus:
    name: str
    path: Path
    versions: list[VersionStatus]


def version_status(run: RunFolder) -> VersionStatus:
    """Read one version's status from its files (a torn or missing file gives blanks, not errors)."""
    info = run.read_status()
    periods = run.read_periods()
    checkpoints = list_checkpoints(run.checkpoints) if run.checkpoints.is_dir() else []
    series = read_run_series(run.path) if run.metrics_path.is_file() else {}
    logged = [int(s.steps[-1]) for s in series.values() if len(s)]
    batches = max([int(p.get("last_batch") or 0) for p in periods] + checkpoints + logged + [0])
    best = best_value(series["val/loss"]) if "val/loss" in series else None
    watch = _last_point(series.get("watch/score"))
    driving = None
    record = latest_eval(run)
    if record is not None:
        report = policy_report(record) or {}
        expert = next((d for d in record.get("drivers", []) if d.get("driver") == "expert"), None)
        driving = {
            "batch": record.get("batch"),
            "created": record.get("created"),
            "tracks": record.get("tracks", []),
            "max_steps": record.get("max_steps"),
            "aggregate": report.get("aggregate", {}),
            "expert": expert.get("aggregate", {}) if expert else None,
            "file": record.get("file"),
        }
    return VersionStatus(
        run=run, status=str(info.get("status", "unknown")), batches=batches, checkpoints=checkpoints,
        periods=periods, best_val=best, driving=driving, watch_score=watch, info=info,
    )


def _last_point(series: Series | None) -> tuple[int, float] | None:
    if series is None or not len(series):
        return None
    return int(series.steps[-1]), float(series.values[-1])


def line_versions(line_dir: Path) -> list[RunFolder]:
    """The line's version folders, by version number (folders that are not runs are skipped)."""
    runs = []
    for child in line_dir.iterdir() if line_dir.is_dir() else []:
        match = VERSION_PATTERN.match(child.name)
        if match and match.group("line") == line_dir.name and is_run_folder(child):
            runs.append(RunFolder(child))
    return sorted(runs, key=lambda r: r.version)


def scan_lines(root: Path, line: str | None = None) -> list[LineStatus]:
    """Every line under ``root`` (or just ``line``), each with its versions' status."""
    if not root.is_dir():
        raise ReportError(f"runs root {root} does not exist: pass --runs DIR (where `drivelab train --runs` wrote)")
    names = sorted(p.name for p in root.iterdir() if p.is_dir() and line_versions(p))
    if line is not None:
        if line not in names:
            known = ", ".join(names) or "none"
            raise ReportError(f"no model line {line!r} under {root}; lines there: {known}")
        names = [line]
    return [
        LineStatus(name, root / name, [version_status(r) for r in line_versions(root / name)])
        for name in names
    ]


def resolve_line(ref: str | Path, runs_root: Path) -> Path | None:
    """A line folder given as a path or a name under ``runs_root``; None if ``ref`` is no line."""
    for candidate in (Path(ref), runs_root / str(ref)):
        if candidate.is_dir() and not is_run_folder(candidate) and line_versions(candidate):
            return candidate
    return None


def format_period(period: dict[str, Any], short: bool = False) -> str:
    """``2026-11-21 19:30-19:41 (batches 0-1500, not watched)``: the seeds' "Training periods".

    ``short`` leaves out the year and the words, for a table cell.
    """
    day, _, start_time = str(period.get("started") or "").partition("T")
    end_day, _, end_time = str(period.get("ended") or "").partition("T")
    if short:
        day, end_day = day[5:], end_day[5:]
    when = f"{day} {start_time[:5]}"
    state = period.get("status")
    if end_time:
        when += f"-{end_time[:5]}" if end_day == day else f" - {end_day} {end_time[:5]}"
    elif state == "training":
        when += "-now"
    batches = f"{period.get('first_batch', 0)}-{period.get('last_batch', 0)}"
    watched = "watched" if period.get("watched") else "not watched"
    extra = f", {state}" if state and state != "finished" else ""
    if short:
        return when
    return f"{when} (batches {batches}, {watched}{extra})"


def score_text(aggregate: dict[str, Any], max_steps: int | None = None) -> str:
    """``0.871±0.120`` from an evaluation aggregate (``-`` when absent), with the evaluation's
    step cap when known (``0.695±0.010 cap 600``): a capped lap scores its completion only, so a
    score without its cap misleads."""
    mean = aggregate.get("score_mean")
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "-"
    std = aggregate.get("score_std") or 0.0
    return f"{mean:.3f}±{std:.3f}" + (f" cap {max_steps}" if max_steps else "")


def cap_note(record: dict[str, Any]) -> str:
    """What an evaluation's step cap did: whether a lap (a route) could be finished within it."""
    cap = record.get("max_steps")
    if not cap:
        return ""
    drivers = record.get("drivers", [])
    finished = [a.get("laps_finished", 0) for d in drivers if (a := d.get("aggregate", {}))]
    if any(a.get("success_rate") is not None for d in drivers if (a := d.get("aggregate", {}))):
        return f"Episodes capped at {cap} steps."
    if finished and not any(finished):
        return (f"Episodes capped at {cap} steps, and no driver finished a lap within it: scores "
                "measure the completion of a part of the lap, compare them to the expert's.")
    return f"Episodes capped at {cap} steps."
