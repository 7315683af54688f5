"""A line's index page, ``<line>/index.md`` (+ ``index.html``): "List of the models".

One row per version (status, batches, last period, best validation loss, driving score and the
first sentence of its notes), each linking to its model card, which is (re)written alongside
unless ``cards`` is off; like the cards it is regenerated from the run folders at any time.
"""

from __future__ import annotations

from pathlib import Path

from drivelab.config import load_config
from drivelab.outputs import check_regenerable, write_generated
from drivelab.reports.card import LINE_PAGE, CardFiles, card_files, write_card
from drivelab.reports.document import Document, to_html, to_markdown
from drivelab.reports.events import ReportError
from drivelab.reports.lines import format_period, line_versions, score_text, version_status
from drivelab.runs.folder import RunFolder


def write_line_page(line_dir: Path, html: bool = False, cards: bool = True, gif_bytes: int = 1_500_000,
                    force: bool = False) -> CardFiles:
    """``<line>/index.md`` listing the versions ("List of the models"); each card is (re)written."""
    runs = line_versions(line_dir)
    pages = [line_dir / f"{LINE_PAGE}.md"] + ([line_dir / f"{LINE_PAGE}.html"] if html else [])
    check_regenerable(pages + [f for run in runs if cards for f in card_files(run, html)], "card", force)
    if not runs:
        raise ReportError(f"{line_dir} holds no versions (<line>_vN run folders)")
    media: list[Path] = []
    statuses = []
    for run in runs:
        if cards:
            media += write_card(run, html=html, gif_bytes=gif_bytes, line_page=True, force=True).media
        statuses.append(version_status(run))
    doc = Document(line_dir.name)
    doc.heading("List of the models:", 2)
    doc.bullets([f"[`{s.name}`]({s.name}/card.md)" for s in statuses])
    rows = []
    for s in statuses:
        best = "-" if s.best_val is None else f"{s.best_val[1]:.4g} (batch {s.best_val[0]})"
        driving = score_text(s.driving["aggregate"], s.driving.get("max_steps")) if s.driving else (
            f"{s.watch_score[1]:.3f} (watch, batch {s.watch_score[0]})" if s.watch_score else "-")
        last = format_period(s.last_period) if s.last_period else "-"
        rows.append([f"[`{s.name}`]({s.name}/card.md)", s.status, str(s.batches), last, best, driving,
                     _notes_of(s.run)])
    doc.table(["version", "status", "batches", "last period", "best val loss", "driving score", "notes"], rows)
    markdown = write_generated(line_dir / f"{LINE_PAGE}.md", to_markdown(doc), force=True, flag="card")
    page = None
    if html:
        page = write_generated(line_dir / f"{LINE_PAGE}.html", to_html(doc, line_dir), force=True, flag="card")
    return CardFiles(markdown, page, media)


def _notes_of(run: RunFolder, limit: int = 90) -> str:
    """The first sentence of a version's notes, short enough for a table cell."""
    try:
        notes = " ".join(load_config(run.config_path).notes.split())
    except Exception:  # a line page must not fail on one unreadable old config
        return ""
    first = notes.split(". ")[0]
    return first if len(first) <= limit else first[: limit - 1] + "…"
