"""The `diagnose` verb: copycat, shortcut and inertia tests of one checkpoint, with verdicts."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from drivelab.cli.app import FORCE_OPTION, app, console_beside, err
from drivelab.outputs import is_stdout
from drivelab.seeds import HELD_OUT_SEED
from drivelab.workers import DEFAULT_WORKERS


@app.command("diagnose")
def diagnose(
    run: Annotated[str, typer.Argument(help="RUN[@batch]: a run folder or <line>_vN.")],
    overrides: Annotated[list[str] | None, typer.Argument(
        help="Threshold overrides diagnose.<key>=value, as every verb takes overrides.")] = None,
    split: Annotated[str, typer.Option(help="Split the offline tests score on.")] = "val",
    dataset: Annotated[Path | None, typer.Option(help="Another dataset recorded with the run's signals.")] = None,
    tracks: Annotated[int, typer.Option(help="Held-out tracks for the closed-loop A/B and inertia test (0: offline only).")] = 5,
    seed: Annotated[int, typer.Option(help="First track seed (held out: 10000 or above).")] = HELD_OUT_SEED,
    max_steps: Annotated[int, typer.Option(help="Step cap per closed-loop track.")] = 1000,
    workers: Annotated[int, typer.Option(help="Closed-loop worker processes.")] = DEFAULT_WORKERS,
    thresholds: Annotated[
        list[str] | None, typer.Option("--set", hidden=True, help="Older spelling of a positional override.")
    ] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="Also write the diagnosis to this file (-: stdout).")] = None,
    plot: Annotated[Path | None, typer.Option("--plot", help="Also write the reliance figure here (.png).")] = None,
    runs: Annotated[Path, typer.Option("--runs", help="Root folder of the model lines.")] = Path("runs"),
    force: Annotated[bool, FORCE_OPTION] = False,
) -> None:
    """Find copycat, shortcut and inertia failures: input reliance, previous-action probe,
    closed-loop A/B (history at its mean, frames blanked) and standing starts; verdicts per head."""
    from drivelab.diagnose.job import DiagnoseRequest
    from drivelab.diagnose.job import diagnose as run_diagnosis
    from drivelab.diagnose.report import render, save_report

    request = DiagnoseRequest(ref=run, runs_root=runs, split=split, dataset=dataset, tracks=tracks, seed=seed,
                              max_steps=max_steps, workers=workers, thresholds=[*(overrides or []), *(thresholds or [])],
                              json_out=json_out, plot_out=plot, force=force)
    started = time.monotonic()

    def stage(text: str) -> None:  # on stderr: stdout keeps the report alone
        err.print(f"[dim]{time.monotonic() - started:5.0f} s[/]  {escape(text)}", highlight=False)

    report = run_diagnosis(request, on_stage=stage)
    shown = console_beside(json_out)  # `--json -`: the JSON alone on stdout, the tables on stderr
    render(shown, report)
    for path in save_report(report, request):
        if not is_stdout(path):
            shown.print(f"wrote {path}", markup=False, highlight=False, soft_wrap=True)
