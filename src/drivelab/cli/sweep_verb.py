"""The `sweep` verb: a grid of runs on Ray Tune, its progress and its results table."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from drivelab.cli.app import app, err, out
from drivelab.errors import DrivelabError
from drivelab.extras import require_extra


@app.command()
def sweep(
    spec: Annotated[Path | None, typer.Argument(help="SWEEP.yaml (not with --resume/--status).")] = None,
    overrides: Annotated[
        list[str] | None, typer.Argument(help="KEY=VALUE overrides of the base config, e.g. train.max_batches=500.")
    ] = None,
    out_dir: Annotated[Path | None, typer.Option("--out", help="Sweep folder (default sweeps/<name>).")] = None,
    address: Annotated[
        str | None,
        typer.Option("--address", help="Ray cluster to run on: auto or ray://host:port (default: "
                     "a local Ray on this machine's cores)."),
    ] = None,
    resume: Annotated[Path | None, typer.Option(
        "--resume", help="Continue this sweep folder (only Ray state drivelab recorded is loaded).")] = None,
    status: Annotated[Path | None, typer.Option("--status", help="Print a sweep folder's progress.")] = None,
) -> None:
    """Run every cell of a grid x seeds as ordinary runs; results.md/csv/json with mean ± std."""
    from drivelab.sweep.engine import ray_session
    from drivelab.sweep.runner import plan_new_sweep, reopen_sweep, run_sweep
    from drivelab.sweep.status import sweep_progress

    given = [name for name, value in (("SPEC", spec), ("--resume", resume), ("--status", status)) if value]
    if len(given) != 1:
        raise DrivelabError("give one of SPEC, --resume SWEEP_DIR or --status SWEEP_DIR"
                            + (f" (got {', '.join(given)})" if given else ""))
    if (resume or status) and (overrides or out_dir):
        raise DrivelabError("overrides and --out belong to a new sweep; --resume and --status use the "
                            "folder's own")
    if status is not None:
        plan, folder = reopen_sweep(status)
        out.print(f"{plan.spec.name} ({folder.path}): {sweep_progress(plan, folder).line()}",
                  markup=False, highlight=False, soft_wrap=True)
        results = folder.path / "results.md"
        if results.is_file():
            out.print(f"results: {results}", markup=False, highlight=False)
        return
    require_extra("ray", "drivelab sweep")
    if resume is not None:
        plan, folder = reopen_sweep(resume)
    else:
        assert spec is not None
        plan, claim = plan_new_sweep(spec, list(overrides or []), out_dir)
    # a new sweep's folder is made only once Ray runs (an unreachable address leaves nothing); a
    # resume starts Ray inside `run_sweep`, after its lock and the check of Tune's pickles
    session = ray_session(address, plan.spec.trial.cpus) if resume is None else contextlib.nullcontext()
    with err.status(f"sweep {plan.spec.name}: starting Ray") as line, session:
        if resume is None:
            folder = claim()  # only now that Ray runs: a sweep that cannot start leaves no folder

        def redraw() -> None:
            line.update(f"sweep {plan.spec.name}: {sweep_progress(plan, folder).line()}")

        written = run_sweep(plan, folder, address=address, resume=resume is not None, on_change=redraw)
    progress = sweep_progress(plan, folder)
    out.print(f"[green]swept[/] {escape(str(folder.path))}: {escape(progress.line())}", highlight=False, soft_wrap=True)
    for path in written[:3]:
        out.print(f"  {path}", markup=False, highlight=False)
