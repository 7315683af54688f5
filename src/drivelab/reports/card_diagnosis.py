"""The model card's diagnosis section: `drivelab diagnose`'s verdicts and reliance figure.

A card that shows a good validation loss next to a copycat verdict tells the reader what the
loss hid (model_0009). Read from the newest ``<run>/diagnosis/diagnosis_batch<N>[_<split>][_<data>].json``
the verb leaves in the run folder (with its split and dataset); without one, the command that makes it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from drivelab.diagnose.report import FOLDER, JSON_PREFIX, figure_path
from drivelab.reports.document import Document
from drivelab.runs.folder import RunFolder


def latest_diagnosis(run: RunFolder) -> tuple[Path, dict[str, Any]] | None:
    """The newest saved diagnosis of ``run`` (by modification time) and its contents."""
    files = sorted((run.path / FOLDER).glob(f"{JSON_PREFIX}batch*.json"), key=lambda p: p.stat().st_mtime)
    for path in reversed(files):
        try:
            return path, json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
    return None


def diagnosis_section(doc: Document, run: RunFolder) -> None:
    """Verdicts per head (flagged first in bold), the figure and threshold behind each, the plot."""
    doc.para("*Diagnosis (copycat, shortcut, inertia):*")
    found = latest_diagnosis(run)
    if found is None:
        doc.para(f"Not diagnosed yet: `drivelab diagnose {run.path}` keeps its verdicts with the run.")
        return
    path, record = found
    doc.para(f"Checkpoint *{record.get('run')}* on the {record.get('split')} split "
             f"({record.get('samples')} samples){_tracks(record)}.")
    rows = []
    for who, findings in record.get("verdicts", {}).items():
        for f in findings:
            text = f"**{f['text']}**" if f.get("flagged") else f["text"]
            rows.append([who, text, f"{f['figure']} {f['value']:.3g}", f"{f['threshold']:.3g}"])
    doc.table(["head", "verdict", "figure", "threshold"], rows)
    plot = figure_path(path)
    if plot.is_file():
        doc.image(str(plot.relative_to(run.path)), "input reliance per head")


def _tracks(record: dict[str, Any]) -> str:
    loop = record.get("closed_loop")
    if not loop or not loop.get("tracks"):
        return ", no closed-loop drive"
    tracks = loop["tracks"]
    return f", closed loop on held-out tracks {tracks[0]}-{tracks[-1]}"
