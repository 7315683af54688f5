"""Verbs that make and inspect datasets: `collect`, `data info`, `data verify`."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from drivelab.cli.app import app, data_app, err, lazy_progress, out
from drivelab.errors import DrivelabError


# --------------------------------------------------------------------------- collect
@app.command()
def collect(
    out_path: Annotated[Path, typer.Option("--out", help="Dataset folder (Zarr v3) to create.")],
    episodes: Annotated[int, typer.Option(help="Episodes to record.")] = 4,
    env: Annotated[str, typer.Option(help="`carracing` or a gymnasium id with image frames.")] = "carracing",
    workers: Annotated[int, typer.Option(help="Parallel worker processes, each with its own env.")] = 1,
    seed: Annotated[int, typer.Option(help="Episode i drives track seed SEED+i.")] = 0,
    noise: Annotated[float, typer.Option(help="DART noise: chance per step to start a perturbation.")] = 0.0,
    noise_hold: Annotated[int, typer.Option(help="Steps a perturbation is held.")] = 10,
    val_episodes: Annotated[int, typer.Option(help="Last episodes (before test) for the val split.")] = 0,
    test_episodes: Annotated[int, typer.Option(help="Last episodes for the test split.")] = 0,
    max_steps: Annotated[int, typer.Option(help="Step cap per episode.")] = 1000,
    append: Annotated[bool, typer.Option("--append", help="Add to an existing dataset.")] = False,
    chunk_frames: Annotated[int, typer.Option(help="Frames per Zarr chunk.")] = 32,
) -> None:
    """Record expert driving into a crash-safe Zarr dataset."""
    from drivelab.data.collect import CollectPlan
    from drivelab.data.collect import collect as run_collect

    plan = CollectPlan(env=env, seed=seed, noise=noise, noise_hold=noise_hold, max_steps=max_steps)
    with lazy_progress(episodes, "collect") as on_progress:
        summary = run_collect(
            out_path,
            plan,
            episodes=episodes,
            workers=workers,
            val_episodes=val_episodes,
            test_episodes=test_episodes,
            append=append,
            chunk_frames=chunk_frames,
            on_progress=on_progress,
        )
    table = Table(title=f"{summary.path}: {len(summary.indices)} episodes recorded")
    for col in ("episode", "track", "frames", "return", "progress", "perturbed", "unstuck"):
        table.add_column(col, justify="right")
    for row in summary.episode_rows:
        table.add_row(
            str(row["index"]),
            str(row.get("track_seed", "")),
            str(row["length"]),
            f"{row.get('return', float('nan')):.1f}",
            f"{row['progress']:.0%}" if isinstance(row.get("progress"), float) else "-",
            str(row.get("perturbed_steps", 0)),
            str(row.get("unstuck_count", "-")),
        )
    out.print(table)
    out.print(
        f"{summary.frames} frames in {summary.seconds:.1f} s "
        f"([cyan]{summary.frames_per_s:.0f} frames/s[/]) -> {summary.path}"
    )


# --------------------------------------------------------------------------- data
@data_app.command("info")
def data_info(
    path: Annotated[Path, typer.Argument(help="Dataset folder.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")] = False,
    plot: Annotated[Path | None, typer.Option(help="Write per-output histograms to this PNG.")] = None,
) -> None:
    """Episodes, frames, splits and per-signal statistics of a dataset."""
    from drivelab.data.inspect import dataset_info, plot_histograms
    from drivelab.data.store import DatasetStore

    store = DatasetStore.open(path)
    info = dataset_info(store)
    if plot is not None:
        written = plot_histograms(store, plot)
        info["plot"] = str(written)
    if as_json:
        sys.stdout.write(json.dumps(info, indent=2) + "\n")
        return
    out.print(
        f"[bold]{info['path']}[/]  {info['env_id']} @ {info['fps']:g} fps, frames "
        f"{'x'.join(map(str, info['frame_shape']))}, format v{info['version']}"
    )
    out.print(f"{info['episodes']} episodes, {info['frames']} frames")
    splits = Table(title="splits")
    for col in ("split", "episodes", "frames"):
        splits.add_column(col, justify="right")
    for name, s in info["splits"].items():
        splits.add_row(name, str(s["episodes"]), str(s["frames"]))
    out.print(splits)
    sig = Table(title="signals (mean / std / min / max per value)")
    sig.add_column("signal", no_wrap=True, min_width=13)
    sig.add_column("unit", no_wrap=True, min_width=8)
    for col in ("mean", "std", "min", "max"):
        sig.add_column(col, justify="right", no_wrap=True)

    def fmt(values: list[float]) -> str:
        return "\n".join(f"{x:.3f}" for x in values)

    for kind, entries in info["signals"].items():
        sig.add_section()
        sig.add_row(f"[bold]{kind}[/]", "", "", "", "", "")
        for name, s in entries.items():
            if "mean" in s:
                sig.add_row(f"  {name}", s["unit"], fmt(s["mean"]), fmt(s["std"]), fmt(s["min"]), fmt(s["max"]))
    out.print(sig)
    if info["frame_stats"]:
        fs = info["frame_stats"]
        out.print(
            "frame mean (RGB, /255): " + ", ".join(f"{v:.3f}" for v in fs["mean"])
            + "   std: " + ", ".join(f"{v:.3f}" for v in fs["std"])
        )
    if info["leftovers"]:
        out.print(f"[yellow]{len(info['leftovers'])} uncommitted leftovers[/] (see `drivelab data verify`)")
    if plot is not None:
        out.print(f"histograms -> {info['plot']}")


@data_app.command("verify")
def data_verify(
    path: Annotated[Path, typer.Argument(help="Dataset folder.")],
    remove_leftovers: Annotated[
        bool, typer.Option("--remove-leftovers", help="Delete uncommitted leftovers.")
    ] = False,
) -> None:
    """Read every committed episode and check shapes, dtypes and values."""
    from drivelab.data.inspect import verify_dataset
    from drivelab.data.store import DatasetStore

    store = DatasetStore.open(path)
    report = verify_dataset(store)
    for problem in report.problems:
        err.print(f"[red]problem:[/] {problem}")
    if report.leftovers:
        if remove_leftovers:
            for rel in store.remove_leftovers():
                out.print(f"removed leftover {rel}")
        else:
            for rel in report.leftovers:
                out.print(f"[yellow]leftover[/] {rel} (never committed; --remove-leftovers deletes it)")
    if not report.ok:
        raise DrivelabError(
            f"{path}: {len(report.problems)} problem(s) in {report.episodes} committed episodes"
        )
    out.print(f"[green]ok[/]: {report.episodes} committed episodes, {report.frames} frames intact")


