"""Verbs that build and train policies: `train`, `summary`."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from drivelab.cli.app import app, err, out
from drivelab.errors import DrivelabError


# --------------------------------------------------------------------------- train
@app.command()
def train(
    config: Annotated[Path | None, typer.Argument(help="Experiment YAML (optional with --resume).")] = None,
    overrides: Annotated[
        list[str] | None, typer.Argument(help="KEY=VALUE overrides, e.g. train.lr=0.01.")
    ] = None,
    runs: Annotated[Path, typer.Option("--runs", help="Root folder of the model lines.")] = Path("runs"),
    resume: Annotated[
        str | None,
        typer.Option("--resume", help="Run to continue as a new period: its folder or <line>_v<N>."),
    ] = None,
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="Show a progress bar.")] = True,
    watch_every: Annotated[
        int | None,
        typer.Option("--watch-every", help="Drive every N-th batch's checkpoint in a player process "
                     "and log its driving score and video (N a multiple of train.checkpoint_every)."),
    ] = None,
    watch_steps: Annotated[int | None, typer.Option("--watch-steps", help="Step cap of a watch episode.")] = None,
    watch_seed: Annotated[
        int | None, typer.Option("--watch-seed", help="Held-out track every checkpoint drives.")
    ] = None,
) -> None:
    """Train a policy: a new version runs/<line>/<line>_v<N>/, or continue one with --resume."""
    from drivelab.train.config_source import load_train_config

    if watch_every is None and (watch_steps is not None or watch_seed is not None):
        raise DrivelabError("--watch-steps and --watch-seed need --watch-every N")
    # the config first: a mistake in it is answered before torch and Fabric are imported (~5 s)
    cfg = load_train_config(config, list(overrides or []), resume, runs)
    from drivelab.train import train as run_training
    from drivelab.train.progress import RichProgress
    from drivelab.watch.spec import WatchOptions

    watch = None
    if watch_every is not None:
        watch = WatchOptions.given(watch_every, max_steps=watch_steps, seed=watch_seed)
    sink = RichProgress(err, title=cfg.line) if progress else None
    result = run_training(cfg, runs_root=runs, resume=resume, progress=sink, watch=watch)
    if not result.is_global_zero:
        return
    if result.watch_note:
        err.print(f"[yellow]{escape(result.watch_note)}[/]", highlight=False, soft_wrap=True)
    out.print(
        f"[green]trained[/] {escape(str(result.run.path))}: batches {result.first_batch}-{result.batches} "
        f"on {result.world_size} process(es) in {result.seconds:.1f} s, last checkpoint "
        f"{escape(str(result.run.checkpoints))}/batch_{result.last_checkpoint}.safetensors"
    )
    if result.init_report is not None:
        for line in result.init_report.lines():
            out.print(line, markup=False, highlight=False, soft_wrap=True)
        out.print(f"init report: {result.run.path}/init_report.json", markup=False, highlight=False,
                  soft_wrap=True)
    shown = {**result.train_values, **result.val_values}
    keys = [k for k in shown if k.endswith(("loss", "mean_absolute_error", "accuracy")) or k == "samples_per_s"]
    out.print("  ".join(f"{k} {shown[k]:.4g}" for k in keys), markup=False, highlight=False)
    if result.watch is not None and result.watch["watched_batches"]:
        batches = result.watch["watched_batches"]
        out.print(f"watched batches {', '.join(map(str, batches))} on track {result.watch['seed']}: "
                  f"{result.run.path}/watch.jsonl, videos in {result.run.path}/watch/, "
                  f"TensorBoard {result.run.tb}/watch", markup=False, highlight=False)


@app.command()
def summary(
    config: Annotated[Path, typer.Argument(help="Experiment YAML.")],
    overrides: Annotated[list[str] | None, typer.Argument(help="KEY=VALUE overrides.")] = None,
    dataset: Annotated[
        Path | None,
        typer.Option("--dataset", help="Take frame and history-signal sizes from this dataset."),
    ] = None,
    depth: Annotated[int, typer.Option(help="Module nesting shown in the layer table.")] = 3,
    shapes: Annotated[bool, typer.Option("--shapes/--no-shapes", help="Run one blank sample for output shapes.")] = True,
) -> None:
    """Print the policy's layer table and Keras-convention parameter counts."""
    from drivelab.config import load_config
    from drivelab.models import render_summary, summarize_config
    from drivelab.train.inputs import fit_config_to_dataset

    cfg = load_config(config, list(overrides or []))
    source = f"config data.input_size {list(cfg.data.input_size)}"
    if dataset is not None:
        cfg, source = fit_config_to_dataset(cfg, dataset)
    result = summarize_config(cfg, with_shapes=shapes, max_depth=depth)
    sys.stdout.write(render_summary(result, title=f"{cfg.line}  (frames: {source})") + "\n")


