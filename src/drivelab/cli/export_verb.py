"""The `export` verb: a run's policy with its input pipeline as one checked ONNX file."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer
from rich import box
from rich.markup import escape
from rich.table import Table

from drivelab.cli.app import FORCE_OPTION, app, err, out


@app.command("export")
def export(
    run: Annotated[str, typer.Argument(help="RUN[@batch]: a run folder or <line>_vN.")],
    fmt: Annotated[str, typer.Option("--format", help="File format (onnx).")] = "onnx",
    out_file: Annotated[
        Path | None, typer.Option("--out", help="The .onnx file (default: <run>@<batch>.onnx here).")
    ] = None,
    opset: Annotated[int | None, typer.Option("--opset", help="ONNX opset (default: the exporter's).")] = None,
    dataset: Annotated[
        Path | None, typer.Option("--dataset", help="Parity frames from this dataset instead of the run's.")
    ] = None,
    split: Annotated[
        str | None, typer.Option("--split", help="Parity frames from this split (default: the run's val split).")
    ] = None,
    frames: Annotated[int, typer.Option("--frames", help="Recorded frames the parity check runs on.")] = 64,
    tolerance: Annotated[
        float, typer.Option("--tolerance", help="Largest |onnxruntime - torch| allowed on any output.")
    ] = 1e-4,
    runs: Annotated[Path, typer.Option("--runs", help="Root folder of the model lines.")] = Path("runs"),
    force: Annotated[bool, FORCE_OPTION] = False,
) -> None:
    """Export a policy (frames in, actions out) to ONNX and check it against the torch runtime."""
    from drivelab.export import ExportRequest, export_run

    started = time.monotonic()
    # a spinner on stderr that names the slow step (tracing takes tens of seconds); transient, so
    # a refusal after it is still the one line on stderr, and a pipe gets nothing
    with err.status("exporting", spinner="dots") as status:

        def stage(text: str) -> None:
            status.update(f"{time.monotonic() - started:4.0f} s  {escape(text)}")

        result = export_run(ExportRequest(
            ref=run, runs_root=runs, out=out_file, fmt=fmt, opset=opset, dataset=dataset, split=split,
            frames=frames, tolerance=tolerance, force=force,
        ), on_stage=stage)
    card, report = result.card, result.parity
    out.print(f"parity: max |onnxruntime - torch runtime| on {report.frames} recorded frames of "
              f"{card.dataset}", markup=False, highlight=False, soft_wrap=True)
    table = Table(box=box.SIMPLE_HEAD, padding=(0, 1))
    table.add_column("output")
    for case in report.cases:
        table.add_column(case, justify="right")
    for name in report.worst():
        table.add_row(escape(name), *(f"{diffs.get(name, 0.0):.2e}" for diffs in report.cases.values()))
    out.print(table)
    out.print(f"parity passed (tolerance {card.tolerance:g}); inputs {', '.join(card.inputs)}; "
              f"outputs {', '.join(card.outputs)}", markup=False, highlight=False)
    out.print(f"{card.run} -> {result.path} ({result.size_bytes / 1e6:.2f} MB, opset {card.opset}, "
              f"{card.exporter}, {result.seconds:.1f} s)", markup=False, highlight=False, soft_wrap=True)
