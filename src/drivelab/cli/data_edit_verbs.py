"""Verbs that look at and clean a dataset: `data view` (a page in a browser), `data edit` (a new dataset)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from drivelab.cli.app import data_app, out


@data_app.command("edit", context_settings={"allow_interspersed_args": True})
def data_edit(
    source: Annotated[Path, typer.Argument(help="Dataset to edit (never modified).")],
    operation: Annotated[list[str], typer.Argument(
        help="drop IDS | trim EPISODE START END | split val=IDS|FRACTION test=IDS|FRACTION [seed=N] | "
             "merge OTHER... | filter 'KEY OP VALUE' (live_round>=2, driver==expert, telemetry/speed>1)")],
    out_path: Annotated[Path, typer.Option("--out", help="New dataset folder (Zarr v3); never overwritten.")],
) -> None:
    """Make a new dataset from SOURCE with episodes dropped, trimmed, re-split, merged or filtered."""
    from drivelab.data.edit import edit_dataset

    summary = edit_dataset(source, out_path, operation[0], operation[1:])
    splits = ", ".join(f"{name} {n}" for name, n in summary.splits.items())
    sources = "; ".join(f"{s['path']} ({s['episodes']} episodes, {s['checksum'][:19]}...)" for s in summary.sources)
    out.print(f"{escape(summary.operation)}: {summary.episodes} episodes, {summary.frames} frames ({splits}) "
              f"-> {escape(str(summary.out))} in {summary.seconds:.1f} s", highlight=False)
    out.print(f"from {escape(sources)}", highlight=False, soft_wrap=True)


@data_app.command("view")
def data_view(
    dataset: Annotated[Path, typer.Argument(help="Dataset folder.")],
    episodes: Annotated[str | None, typer.Option(
        help="Episodes to render as video, e.g. 0,3,5-7 (default: the first 4; all are listed).")] = None,
    out_dir: Annotated[Path | None, typer.Option("--out", help="Folder for index.html and the videos "
                                                 "(default: DATASET-view beside the dataset).")] = None,
    run: Annotated[str | None, typer.Option(help="Also plot this run's predictions beside the labels.")] = None,
    runs_root: Annotated[Path, typer.Option("--runs", help="Folder holding the runs.")] = Path("runs"),
    force: Annotated[bool, typer.Option("--force", help="Replace files of the page written by an earlier view.")] = False,
) -> None:
    """A page (HTML + MP4, opens from disk) with every episode listed and chosen ones as video beside their signals."""
    from drivelab.reports.dataset_view import build_view

    page = build_view(dataset, out_dir, episodes, run=run, runs_root=runs_root, force=force)
    out.print(f"{page.episodes_shown} episode video(s) of {page.episodes_listed} listed, "
              f"{page.bytes / 1e6:.1f} MB in {page.seconds:.1f} s -> {escape(str(page.index))}", highlight=False)
