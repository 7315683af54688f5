"""Verbs that report on runs: `runs` (lines and versions), `card` (model cards), `compare` (curves)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich import box
from rich.markup import escape
from rich.table import Table

from drivelab.cli.app import FORCE_OPTION, app, out
from drivelab.errors import DrivelabError
from drivelab.outputs import check_output

RUNS_OPTION = typer.Option("--runs", help="Root folder of the model lines.")


# --------------------------------------------------------------------------- runs
@app.command("runs")
def runs_(
    line: Annotated[str | None, typer.Argument(help="Show only this model line.")] = None,
    runs: Annotated[Path, RUNS_OPTION] = Path("runs"),
) -> None:
    """List model lines and their versions: status, batches, last period, best val loss, driving score.

    "last period" is #<number of periods> and its dates; "best val" is the lowest val/loss @ its
    batch; "driving" is the latest `drivelab eval` driving score (mean±std over tracks, @ the
    checkpoint batch when it is not the latest), else the last watched checkpoint's.
    """
    from drivelab.reports.lines import format_period, scan_lines, score_text

    lines = scan_lines(runs, line)
    if not lines:
        out.print(f"no model lines under {runs} yet: `drivelab train CONFIG --runs {runs}` makes one",
                  markup=False, highlight=False)
        return
    for found in lines:
        # compact (no vertical rules) so it stays whole in an 80-column terminal; the line is in
        # the title, so a version shows as v<N>
        table = Table(title=escape(f"{found.name}  ({found.path})"), title_justify="left",
                      box=box.SIMPLE_HEAD, padding=(0, 1), pad_edge=False, collapse_padding=True)
        for column in ("ver", "status", "batches", "last period", "best val", "driving"):
            left = column in ("ver", "status", "last period")
            table.add_column(column, justify="left" if left else "right", no_wrap=True)
        for v in found.versions:
            best = "-" if v.best_val is None else f"{v.best_val[1]:.4g}@{v.best_val[0]}"
            if v.driving:
                at = v.driving["batch"]  # shown when the evaluated checkpoint is not the latest
                driving = (score_text(v.driving["aggregate"], v.driving.get("max_steps"))
                           + (f"@{at}" if at != v.batches else ""))
            elif v.watch_score:
                driving = f"{v.watch_score[1]:.3f}@{v.watch_score[0]} (watch)"
            else:
                driving = "-"
            last = f"#{len(v.periods)} {format_period(v.last_period, short=True)}" if v.last_period else "-"
            table.add_row(f"v{v.run.version}", v.status, str(v.batches), escape(last), best, driving)
        out.print(table)


# --------------------------------------------------------------------------- card
@app.command()
def card(
    target: Annotated[str, typer.Argument(help="A run (folder or <line>_vN) or a line (folder or name).")],
    html: Annotated[bool, typer.Option("--html", help="Also write a self-contained HTML page.")] = False,
    gif_kb: Annotated[int, typer.Option("--gif-kb", help="Shrink the driving GIF to about this size.")] = 1500,
    runs: Annotated[Path, RUNS_OPTION] = Path("runs"),
    force: Annotated[bool, FORCE_OPTION] = False,
) -> None:
    """Write a model card (card.md, card/ pictures) for a run, or a line page listing its versions."""
    from drivelab.reports.card import write_card
    from drivelab.reports.events import resolve_source
    from drivelab.reports.line_page import write_line_page
    from drivelab.reports.lines import resolve_line
    from drivelab.runs.folder import RunFolder

    if gif_kb < 50:
        raise DrivelabError(f"--gif-kb must be at least 50 (got {gif_kb})")

    line_dir = resolve_line(target, runs)
    if line_dir is not None:
        files = write_line_page(line_dir, html=html, gif_bytes=gif_kb * 1000, force=force)
        out.print(f"[green]line page[/] {escape(str(files.markdown))}" + (f" and {escape(str(files.html))}" if files.html else "")
                  + " (+ the cards of its versions)", soft_wrap=True)
        return
    source = resolve_source(target, runs)
    if source.kind != "run":
        raise DrivelabError(f"{target} is a TensorBoard log, not a drivelab run: a card needs a run folder")
    files = write_card(RunFolder(source.path), html=html, gif_bytes=gif_kb * 1000, force=force)
    out.print(f"[green]card[/] {escape(str(files.markdown))}" + (f" and {escape(str(files.html))}" if files.html else "")
              + f", pictures in {files.markdown.parent / 'card'}", soft_wrap=True)


# --------------------------------------------------------------------------- compare
@app.command()
def compare(
    sources: Annotated[list[str], typer.Argument(help="Runs (folder or <line>_vN), TensorBoard log folders or event files.")],
    tags: Annotated[str, typer.Option("--tags", help="Comma-separated tags, e.g. loss,steering_loss (suffix match: "
                                      "steering_loss finds ModelOutputs.steering_loss).")] = "loss",
    subsample: Annotated[int, typer.Option("--subsample", help="Keep every K-th point.")] = 1,
    cut_end: Annotated[int | None, typer.Option("--cut-end", help="Drop points after step N.")] = None,
    legend: Annotated[str | None, typer.Option("--legend", help="Comma-separated names, one per source.")] = None,
    smooth: Annotated[float, typer.Option("--smooth", help="EMA weight in [0, 1), as TensorBoard's slider.")] = 0.0,
    out_path: Annotated[Path, typer.Option("--out", help="PNG; with several tags <stem>_<tag>.png each.")] = Path("compare.png"),
    panels: Annotated[bool, typer.Option("--panels", help="All tags as panels of one PNG instead of one PNG per tag.")] = False,
    title: Annotated[str | None, typer.Option("--title", help="Figure title.")] = None,
    log_y: Annotated[bool, typer.Option("--log-y", help="Logarithmic value axis.")] = False,
    runs: Annotated[Path, RUNS_OPTION] = Path("runs"),
    force: Annotated[bool, FORCE_OPTION] = False,
) -> None:
    """Plot the same tags of several runs / TensorBoard logs: one figure per tag (combine_results)."""
    from drivelab.reports.compare import CompareOptions, collect_curves, plot_compare
    from drivelab.reports.events import resolve_source

    if not sources:
        raise DrivelabError("name at least one run or log folder to compare")
    check_output(out_path, "--out", (".png",), force=force)
    options = CompareOptions(
        tags=tuple(t.strip() for t in tags.split(",")),
        legend=tuple(n.strip() for n in legend.split(",")) if legend is not None else None,
        subsample=subsample, cut_end=cut_end, smooth=smooth, title=title, log_y=log_y,
    )
    resolved = [resolve_source(s, runs) for s in sources]
    curves = collect_curves(resolved, options)
    for path in plot_compare(curves, options, out_path, panels=panels, force=force):
        out.print(f"[green]figure[/] {escape(str(path))}", soft_wrap=True)
    for tag, lines in curves.items():
        shown = ", ".join(f"{name} {len(s)} points ({s.tag})" for name, s in lines)
        out.print(f"  {tag}: {shown}", markup=False, highlight=False, soft_wrap=True)
