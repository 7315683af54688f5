"""The `eval` verb: closed-loop driving, baselines, videos, offline metrics."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from drivelab.cli.app import FORCE_OPTION, app, console_beside, err, lazy_progress
from drivelab.outputs import is_stdout
from drivelab.seeds import DEFAULT_ENV, HELD_OUT_SEED
from drivelab.workers import DEFAULT_WORKERS


# --------------------------------------------------------------------------- eval
@app.command("eval")
def eval_(
    run: Annotated[str | None, typer.Argument(help="RUN[@batch]: a run folder or <line>_vN.")] = None,
    episodes: Annotated[int, typer.Option(help="Tracks to drive.")] = 10,
    seed: Annotated[int, typer.Option(help="First track seed (held out from collection's 0..).")] = HELD_OUT_SEED,
    workers: Annotated[int, typer.Option(help="Worker processes (1: in this process).")] = DEFAULT_WORKERS,
    baseline: Annotated[
        list[str] | None, typer.Option(help="Also drive `expert` and/or `random` on the same tracks.")
    ] = None,
    env: Annotated[
        str | None, typer.Option(help=f"Environment (default: the run's world, else {DEFAULT_ENV}).")
    ] = None,
    max_steps: Annotated[int, typer.Option(help="Step cap per track.")] = 1000,
    video: Annotated[Path | None, typer.Option(help="Write one H.264 MP4 per track here.")] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write rows + aggregates to this file (-: stdout).")] = None,
    runs: Annotated[Path, typer.Option("--runs", help="Root folder of the model lines.")] = Path("runs"),
    sample: Annotated[bool, typer.Option("--sample", help="Sample classification heads.")] = False,
    convcam: Annotated[
        bool, typer.Option("--convcam", help="Add a heat map of the last conv layer's maps beside the --video frames.")
    ] = False,
    offline: Annotated[
        str | None, typer.Option("--offline", help="Score RUN's predictions on this split instead of driving.")
    ] = None,
    dataset: Annotated[
        Path | None, typer.Option("--dataset", help="With --offline: another dataset with the run's signals.")
    ] = None,
    top_k: Annotated[
        int | None, typer.Option("--top-k", help="With --offline: k of the top-k accuracy (default 5).")
    ] = None,
    group_map: Annotated[
        Path | None,
        typer.Option("--group-map", help='With --offline: JSON {"group": [class ids or names]} merged before scoring.'),
    ] = None,
    precision: Annotated[
        str, typer.Option("--precision", help="Policy arithmetic: 32, bf16 or auto (bf16 where the CPU has AMX/AVX-512 BF16).")
    ] = "32",
    engine: Annotated[
        list[str] | None,
        typer.Option("--engine", help="torch (default) or onnx (the exported graph on onnxruntime); both: side by side."),
    ] = None,
    force: Annotated[bool, FORCE_OPTION] = False,
) -> None:
    """Drive a policy (a run, or an exported FILE.onnx) and/or baselines on held-out tracks."""
    from drivelab.evaluate.job import EvalRequest, drive, keep_drive, keep_offline, score_offline
    from drivelab.evaluate.offline import render_offline
    from drivelab.evaluate.report import render_report

    request = EvalRequest(
        run=run, episodes=episodes, seed=seed, workers=workers, baseline=tuple(baseline or ()), env=env,
        max_steps=max_steps, video=video, json_out=json_out, runs_root=runs, sample=sample, convcam=convcam,
        offline=offline, dataset=dataset, top_k=top_k, group_map=group_map, precision=precision,
        engine=tuple(engine or ()), force=force,
    )
    shown = console_beside(json_out)  # `--json -`: stdout holds the JSON alone, the tables go to stderr
    if offline is not None:
        report = score_offline(request, lazy_progress)
        render_offline(shown, report)
        _say_kept(keep_offline(request, report), shown)
        return
    outcome = drive(request, lazy_progress, _note)
    render_report(shown, outcome.reports)
    _say_kept(keep_drive(request, outcome), shown)
    outcome.check_complete()


def _note(text: str) -> None:
    err.print(f"note: {text}", markup=False, highlight=False, soft_wrap=True)


def _say_kept(kept: Iterable[tuple[str, Path]], shown: Console) -> None:
    """One line per file as it lands (a later failure leaves the earlier lines true)."""
    for what, where in kept:
        if not is_stdout(where):
            shown.print(f"{what} -> {where}", markup=False, highlight=False)
