"""Model cards: ``<run>/card.md`` (+ ``card.html``), one page per run.

The shape follows Charles's model pages (seeds 000/002): title ``<line>_vN``, training periods
with their batch ranges and whether they were watched, total batches, the Keras-style parameter
summary, an architecture picture, transfer sources and frozen parts, loss curves, validation
metrics, closed-loop results next to the expert, a driving GIF, and free-text notes. Everything
comes from the run folder (config, ``run.json``, ``periods.json``, ``metrics.jsonl``, saved
evaluations), so a card can be regenerated at any time; pictures go to ``<run>/card/``. The
closed-loop section is `card_driving`; the line page listing a line's versions is `line_page`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from drivelab.config import load_config
from drivelab.outputs import check_regenerable, write_generated
from drivelab.reports.card_diagnosis import diagnosis_section
from drivelab.reports.card_driving import driving_section
from drivelab.reports.document import Document, to_html, to_markdown
from drivelab.reports.events import Series, best_value, read_run_series
from drivelab.reports.figures import (
    architecture_blocks,
    architecture_text,
    draw_architecture,
    plot_losses,
)
from drivelab.reports.lines import (
    VersionStatus,
    format_period,
    version_status,
)
from drivelab.runs.folder import RunFolder

MEDIA = "card"
INIT_REPORT = "init_report.json"
LINE_PAGE = "index"


@dataclass(frozen=True)
class CardFiles:
    markdown: Path
    html: Path | None
    media: list[Path]


# ------------------------------------------------------------------------------ run card
CARD_MEDIA = ("architecture.png", "losses.png", "driving.gif")


def card_files(run: RunFolder, html: bool) -> list[Path]:
    """Every file `write_card` may (re)write: checked before anything is drawn."""
    pages = [run.path / "card.md"] + ([run.path / "card.html"] if html else [])
    return pages + [run.path / MEDIA / name for name in CARD_MEDIA]


def write_card(
    run: RunFolder, html: bool = False, gif_bytes: int = 1_500_000, line_page: bool | None = None,
    force: bool = False,
) -> CardFiles:
    """Write ``card.md`` (and ``card.html``) for one run; returns the files written.

    ``line_page`` says whether the line's index page exists to link back to (default: look).
    A card drivelab wrote before is regenerated; a file the user made or edited there is refused
    up front unless ``force`` (`drivelab.outputs.check_regenerable`).
    """
    check_regenerable(card_files(run, html), "card", force)
    config = load_config(run.config_path)
    status = version_status(run)
    series = read_run_series(run.path) if run.metrics_path.is_file() else {}
    media_dir = run.path / MEDIA
    media_dir.mkdir(exist_ok=True)
    media: list[Path] = []
    doc = Document(run.name)
    if line_page if line_page is not None else (run.path.parent / f"{LINE_PAGE}.md").is_file():
        doc.para(f"[<< {run.line}](../{LINE_PAGE}.md)")
    if config.notes.strip():
        doc.para(config.notes.strip())
    _training(doc, status)
    summary = _model_summary(doc, config, status.info)
    _architecture(doc, config, summary, run, media_dir, media)
    _transfer(doc, config, run)
    _curves(doc, config, series, media_dir, media)
    _validation(doc, series)
    driving_section(doc, run, status, media_dir, media, gif_bytes)
    diagnosis_section(doc, run)
    _provenance(doc, status.info)
    markdown = write_generated(run.path / "card.md", to_markdown(doc), force=True, flag="card")
    page = None
    if html:
        page = write_generated(run.path / "card.html", to_html(doc, run.path), force=True, flag="card")
    return CardFiles(markdown, page, media)


def _training(doc: Document, status: VersionStatus) -> None:
    periods = status.periods
    shown = ", ".join(f"`{format_period(p)}`" for p in periods) if periods else "none recorded"
    checkpoints = ", ".join(f"`{b}`" for b in status.checkpoints[-8:]) or "none"
    doc.para(f"Training periods: {shown}  \nTraining batches (total): *{status.batches}*  \n"
             f"Status: `{status.status}`" + (f" ({status.info['error']})" if status.info.get("error") else "")
             + f"  \nCheckpoints (batch): {checkpoints}" + (" (latest 8)" if len(status.checkpoints) > 8 else "")
             + _speed_text(status.info.get("speed")))


def _speed_text(speed: Any) -> str:
    """Precision, memory format and compilation the run trained with (runs before them: none)."""
    if not isinstance(speed, dict) or "precision" not in speed:
        return ""
    extras = [name for name, on in (("channels_last", speed.get("channels_last")),
                                    ("torch.compile", speed.get("compile"))) if on]
    return (f"  \nPrecision: `{speed['precision']}` on {speed.get('device', '?')}"
            + (f" ({', '.join(extras)})" if extras else ""))


def _model_summary(doc: Document, config: Any, info: dict[str, Any]) -> Any:
    """Keras-convention counts of the policy as configured (frozen parts count as non-trainable)."""
    from drivelab.models.summary import summarize_config

    sizes = (info.get("data") or {}).get("history_sizes")
    doc.para("*Model summary:*")
    try:
        summary = summarize_config(config, history_signal_sizes=sizes, with_shapes=False)
    except Exception as exc:  # the card still shows everything else; say why counts are missing
        first = (str(exc).splitlines() or [type(exc).__name__])[0]
        doc.para(f"(the policy could not be built from config.yaml: {first})")
        return None
    counts = summary.counts
    doc.bullets([
        f"Total params: `{counts.total:,}`",
        f"Trainable params: `{counts.trainable:,}`",
        f"Non-trainable params: `{counts.non_trainable:,}` (frozen {counts.frozen:,} + BatchNorm "
        f"statistics {counts.bn_statistics:,})",
    ])
    return summary


def _frozen_parts(config: Any, summary: Any) -> set[str]:
    if summary is None:
        return set()
    return {name for name, counts in summary.parts.items() if counts.frozen and not counts.trainable}


def _init_parts(config: Any, run: RunFolder) -> dict[str, str]:
    """part -> short source name, from the run's init report (exact) or the config's globs."""
    found: dict[str, str] = {}
    report = _read_json(run.path / INIT_REPORT)
    if report:
        for source in report.get("sources", []):
            name = _short_source(str(source.get("source", "")))
            for tensor in source.get("copied", []):
                found.setdefault(_part_of(tensor), name)
        return found
    for entry in getattr(config.model, "init_from", []) or []:
        for glob in getattr(entry, "modules", ["*"]):
            part = "*" if glob.strip() in ("*", "*.*") else _part_of(glob.rstrip("*").rstrip("."))
            for key in ("backbone", "history", "neck", "recurrent", *(f"heads.{h.output}" for h in config.model.heads)):
                if part == "*" or key == part or key.startswith(part + ".") or part.startswith(key):
                    found.setdefault(key, _short_source(str(getattr(entry, "source", entry))))
    return found


def _part_of(name: str) -> str:
    pieces = name.split(".")
    return ".".join(pieces[:2]) if pieces[0] == "heads" and len(pieces) > 1 else pieces[0]


def _short_source(source: str) -> str:
    path, _, batch = source.rpartition("@")
    if not _:
        return Path(source).name
    return f"{Path(path).name}@{batch}"


def _architecture(doc: Document, config: Any, summary: Any, run: RunFolder, media_dir: Path, media: list[Path]) -> None:
    columns = architecture_blocks(config, summary.parts if summary else {}, _frozen_parts(config, summary),
                                  _init_parts(config, run))
    picture = media_dir / "architecture.png"
    draw_architecture(columns, picture)
    media.append(picture)
    doc.para("*Model architecture:*")
    doc.image(f"{MEDIA}/architecture.png", f"{run.name} architecture")
    doc.pre(architecture_text(columns))


def _transfer(doc: Document, config: Any, run: RunFolder) -> None:
    """Transfer sources and frozen groups, as the seeds list them for model_0009."""
    entries = list(getattr(config.model, "init_from", []) or [])
    freeze = list(getattr(config.model, "freeze", []) or [])
    doc.para("*Transfer learning:*")
    if not entries and not config.model.backbone.pretrained:
        doc.para("Trained from scratch: every parameter was initialised randomly (seed "
                 f"`{config.seed}`).")
    items = []
    report = _read_json(run.path / INIT_REPORT)
    by_source = {s.get("source"): s for s in (report or {}).get("sources", [])}
    for entry in entries:
        source, modules = getattr(entry, "source", str(entry)), getattr(entry, "modules", ["*"])
        rename = getattr(entry, "rename", None) or {}
        line = f"`{source}`: modules `{', '.join(modules)}`"
        if rename:
            line += f", renamed {', '.join(f'`{k}`->`{v}`' for k, v in rename.items())}"
        done = by_source.get(source)
        if done:
            line += f"; copied {len(done.get('copied', []))} tensors ({done.get('copied_values', 0):,} values)"
            if done.get("missing"):
                line += f", missing {len(done['missing'])}"
        items.append(line)
    if config.model.backbone.pretrained:
        items.append(f"backbone weights: `{config.model.backbone.pretrained}`")
    if report:
        counts = report.get("counts", {})
        items.append(f"newly initialised: {counts.get('fresh_tensors', 0)} tensors "
                     f"({counts.get('fresh_values', 0):,} values)")
    doc.bullets(items)
    if freeze:
        until = getattr(config.model, "unfreeze_at", None)
        until_epoch = getattr(config.model, "unfreeze_at_epoch", None)
        when = (f"until batch {until}" if until else f"until epoch {until_epoch}" if until_epoch
                else "for the whole training")
        doc.para(f"Frozen: `{', '.join(freeze)}` {when}.")
    else:
        doc.para("None of the layers has been frozen.")


def _curves(doc: Document, config: Any, series: dict[str, Series], media_dir: Path, media: list[Path]) -> None:
    doc.para("*Training curves:*")
    picture = media_dir / "losses.png"
    drawn = plot_losses(series, config.model.outputs, picture)
    if not drawn:
        doc.para("No losses logged yet.")
        return
    media.append(picture)
    doc.image(f"{MEDIA}/losses.png", "loss curves per output (train and validation)")


def _validation(doc: Document, series: dict[str, Series]) -> None:
    keys = sorted(k for k in series if k.startswith("val/"))
    doc.para("*Validation metrics:*")
    if not keys:
        doc.para("No validation rows (no `data.val_split`?).")
        return
    rows = []
    for key in keys:
        curve = series[key]
        last_step, last = int(curve.steps[-1]), float(curve.values[-1])
        higher = any(word in key for word in ("accuracy", "f1", "top"))
        best = best_value(Series(key, curve.steps, -curve.values)) if higher else best_value(curve)
        best_text = "-" if best is None else f"{(-best[1] if higher else best[1]):.4g} (batch {best[0]})"
        rows.append([f"`{key}`", f"{last:.4g} (batch {last_step})", best_text])
    doc.table(["metric", "last", "best"], rows)


def _provenance(doc: Document, info: dict[str, Any]) -> None:
    prov = info.get("provenance") or {}
    data = info.get("data") or {}
    dataset = prov.get("dataset") or {}
    code = prov.get("code") or {}
    doc.para("*Provenance:*")
    items = ["config: [`config.yaml`](config.yaml)"]
    if dataset or data:
        text = f"dataset: `{dataset.get('path') or data.get('path')}`"
        if dataset.get("episodes") is not None:
            text += f", {dataset['episodes']} episodes"
        if data.get("train_samples") is not None:
            text += f" ({data['train_samples']} train / {data.get('val_samples', 0)} val frames)"
        if dataset.get("checksum"):
            text += f", checksum `{dataset['checksum'][:23]}…`"
        items.append(text)
    sources = prov.get("init_sources") or []
    items.append("init sources: " + (", ".join(f"`{_source_text(s)}`" for s in sources) if sources else "none (random init)"))
    if code:
        commit = code.get("git_commit")
        text = f"code: drivelab `{code.get('drivelab')}`"
        if commit:
            text += f", git `{commit[:12]}`" + (" (with uncommitted changes)" if code.get("git_dirty") else "")
        items.append(text)
    if info.get("created"):
        items.append(f"created: {info['created']}")
    doc.bullets(items)


def _source_text(source: Any) -> str:
    if isinstance(source, dict):
        return str(source.get("source", source))
    return str(source)


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
