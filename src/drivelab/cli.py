"""The `drivelab` command: one thin function per verb, each calling the library.

User mistakes surface as `DrivelabError`: `main` prints their one-line message and exits 2,
so nobody sees a traceback for a wrong path or flag. Anything else is a bug and keeps its
traceback.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from drivelab.errors import DrivelabError

app = typer.Typer(
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    help="drivelab: end-to-end driving policies learned from demonstrations.",
)
data_app = typer.Typer(no_args_is_help=True, help="Inspect and check recorded datasets.")
app.add_typer(data_app, name="data")

out = Console()
err = Console(stderr=True)


# --------------------------------------------------------------------------- helpers
@contextmanager
def lazy_progress(
    total: int, label: str, unit: str = "episodes"
) -> Iterator[Callable[[int, int, int], None]]:
    """A progress bar (episodes, frames, frames/s) that appears with the first progress report.

    Starting it lazily keeps a bad-input error a single line: validation happens before any
    work, so no half-drawn bar precedes the message.
    """
    progress = Progress(
        TextColumn(f"[bold]{label}[/]"),
        BarColumn(),
        TextColumn(f"{{task.completed}}/{{task.total}} {unit}"),
        TextColumn("{task.fields[frames]} frames"),
        TextColumn("[cyan]{task.fields[fps]:.0f} frames/s[/]"),
        TimeElapsedColumn(),
        console=err,
    )
    state = {"live": False, "finished": False, "frames": 0}
    task = progress.add_task(label, total=total, frames=0, fps=0.0)

    def on_progress(frames_delta: int, done: int, _total: int) -> None:
        if state["finished"]:
            return
        if not state["live"]:
            progress.reset(task, total=total, frames=0, fps=0.0)  # elapsed time counts from here
            progress.start()
            state["live"] = True
        state["frames"] += frames_delta
        elapsed = progress.tasks[0].elapsed or 1e-9
        progress.update(task, completed=done, frames=state["frames"], fps=state["frames"] / elapsed)
        if done >= total:  # free the terminal for the next stage's display
            progress.stop()
            state["live"], state["finished"] = False, True

    try:
        yield on_progress
    finally:
        if state["live"]:
            progress.stop()


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
    from drivelab.train import load_train_config
    from drivelab.train import train as run_training
    from drivelab.train.progress import RichProgress
    from drivelab.train.watch import WatchOptions

    watch = None
    if watch_every is not None:
        watch = WatchOptions(every=watch_every, max_steps=1000 if watch_steps is None else watch_steps,
                             seed=10_000 if watch_seed is None else watch_seed)
    elif watch_steps is not None or watch_seed is not None:
        raise DrivelabError("--watch-steps and --watch-seed need --watch-every N")
    cfg = load_train_config(config, list(overrides or []), resume, runs)
    sink = RichProgress(err, title=cfg.line) if progress else None
    result = run_training(cfg, runs_root=runs, resume=resume, progress=sink, watch=watch)
    if not result.is_global_zero:
        return
    if result.watch_note:
        err.print(f"[yellow]{result.watch_note}[/]", highlight=False, soft_wrap=True)
    out.print(
        f"[green]trained[/] {result.run.path}: batches {result.first_batch}-{result.batches} "
        f"on {result.world_size} process(es) in {result.seconds:.1f} s, last checkpoint "
        f"{result.run.checkpoints}/batch_{result.last_checkpoint}.safetensors"
    )
    shown = {**result.train_values, **result.val_values}
    keys = [k for k in shown if k.endswith(("loss", "mean_absolute_error")) or k == "samples_per_s"]
    out.print("  ".join(f"{k} {shown[k]:.4g}" for k in keys))
    if result.watch is not None and result.watch["watched_batches"]:
        batches = result.watch["watched_batches"]
        out.print(f"watched batches {', '.join(map(str, batches))} on track {result.watch['seed']}: "
                  f"{result.run.path}/watch.jsonl, GIFs in {result.run.path}/watch/, "
                  f"TensorBoard {result.run.tb}/watch")


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


# --------------------------------------------------------------------------- eval
@app.command("eval")
def eval_(
    run: Annotated[str | None, typer.Argument(help="RUN[@batch]: a run folder or <line>_vN.")] = None,
    episodes: Annotated[int, typer.Option(help="Tracks to drive.")] = 10,
    seed: Annotated[int, typer.Option(help="First track seed (held out from collection's 0..).")] = 10_000,
    workers: Annotated[int, typer.Option(help="Worker processes.")] = 2,
    baseline: Annotated[
        list[str] | None, typer.Option(help="Also drive `expert` and/or `random` on the same tracks.")
    ] = None,
    env: Annotated[str, typer.Option(help="Environment.")] = "carracing",
    max_steps: Annotated[int, typer.Option(help="Step cap per track.")] = 1000,
    video: Annotated[Path | None, typer.Option(help="Write one GIF per track here.")] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write rows + aggregates here.")] = None,
    runs: Annotated[Path, typer.Option("--runs", help="Root folder of the model lines.")] = Path("runs"),
    sample: Annotated[bool, typer.Option("--sample", help="Sample classification heads.")] = False,
    convcam: Annotated[
        bool, typer.Option("--convcam", help="Tile the last conv layer's maps beside the --video frames.")
    ] = False,
    offline: Annotated[
        str | None, typer.Option("--offline", help="Score RUN's predictions on this split instead of driving.")
    ] = None,
    dataset: Annotated[
        Path | None, typer.Option("--dataset", help="With --offline: another dataset with the run's signals.")
    ] = None,
) -> None:
    """Drive a policy (and/or baselines) on held-out tracks and measure the driving."""
    from drivelab.evaluate.drivers import BASELINES, DriverSpec
    from drivelab.evaluate.report import evaluate_many, render_report

    if offline is not None:
        _eval_offline(run, offline, dataset, runs, workers, json_out,
                      driving_flags=bool(baseline or video or convcam))
        return
    if dataset is not None:
        raise DrivelabError("--dataset applies to --offline SPLIT; closed-loop evaluation drives --env")
    if convcam and video is None:
        raise DrivelabError("--convcam draws into the driving videos: add --video DIR")
    specs: list[DriverSpec] = []
    if run is not None:
        specs.append(DriverSpec("policy", run=run, runs_root=str(runs), sample=sample, convcam=convcam))
    for name in baseline or []:
        if name not in BASELINES:
            raise DrivelabError(f"--baseline {name!r} is unknown: use {' or '.join(BASELINES)}")
        specs.append(DriverSpec(name))
    if not specs:
        raise DrivelabError("name a RUN to evaluate, or --baseline expert|random")
    if episodes < 1:
        raise DrivelabError(f"--episodes must be at least 1 (got {episodes})")
    seeds = list(range(seed, seed + episodes))
    with lazy_progress(episodes * len(specs), "eval", unit="tracks") as on_progress:
        reports = evaluate_many(specs, seeds, env=env, workers=workers, max_steps=max_steps,
                                video_dir=video, on_progress=on_progress)
    render_report(out, reports)
    if json_out is not None:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(
            {"tracks": seeds, "drivers": [r.to_dict() for r in reports]}, indent=2) + "\n")
        out.print(f"results -> {json_out}")
    incomplete = [r.driver for r in reports if not r.complete]
    if incomplete:
        raise DrivelabError(f"evaluation incomplete for {', '.join(incomplete)} (failed or interrupted episodes)")


def _eval_offline(
    run: str | None,
    split: str,
    dataset: Path | None,
    runs: Path,
    workers: int,
    json_out: Path | None,
    driving_flags: bool,
) -> None:
    """`eval RUN --offline SPLIT`: per-output metrics of the run's predictions on recorded data."""
    from drivelab.evaluate.offline import OfflineJob, render_offline

    if run is None:
        raise DrivelabError("--offline scores a policy: name a RUN")
    if driving_flags:
        raise DrivelabError("--offline scores recorded samples: drop --baseline, --video and --convcam")
    job = OfflineJob(run, split, dataset=dataset, runs_root=runs, workers=workers)
    with lazy_progress(len(job.batches), "offline", unit="batches") as on_progress:
        report = job.run(on_progress)
    render_offline(out, report)
    if json_out is not None:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(report.to_dict(), indent=2) + "\n")
        out.print(f"results -> {json_out}")


# --------------------------------------------------------------------------- demo
@app.command()
def demo(
    out_root: Annotated[Path, typer.Option("--out", help="Root folder; each run gets a new subfolder.")] = Path("demo_out"),
    episodes: Annotated[int, typer.Option(help="Expert episodes to record.")] = 32,
    batches: Annotated[int | None, typer.Option(help="Training batches (default: the config's).")] = None,
    eval_episodes: Annotated[int, typer.Option(help="Held-out tracks to drive.")] = 10,
    workers: Annotated[int, typer.Option(help="Worker processes for collection and evaluation.")] = 2,
    seed: Annotated[int, typer.Option(help="First track seed of the collection.")] = 0,
    noise: Annotated[float, typer.Option(help="DART noise probability while recording.")] = 0.03,
    max_steps: Annotated[int, typer.Option(help="Step cap per episode.")] = 1000,
    config: Annotated[Path | None, typer.Option(help="Experiment YAML (default: configs/carracing/pilotnet.yaml).")] = None,
) -> None:
    """The main job end to end: collect expert data, train, drive on held-out tracks."""
    from drivelab.demo import DEFAULT_CONFIG, DemoOptions, run_demo
    from drivelab.evaluate.report import render_report
    from drivelab.train.progress import RichProgress

    opts = DemoOptions(out=out_root, episodes=episodes, workers=workers, seed=seed, noise=noise,
                       max_steps=max_steps, batches=batches, eval_episodes=eval_episodes,
                       config=config or DEFAULT_CONFIG)
    titles = {
        "collect": f"1/3 collect {episodes} CarRacing expert episodes (noise {noise}, {workers} workers)",
        "train": f"2/3 train {opts.config.name}",
        "evaluate": f"3/3 drive the policy and the expert on {eval_episodes} held-out tracks",
    }
    out.rule("[bold]drivelab demo[/]")
    with lazy_progress(episodes, "collect") as on_collect, \
            lazy_progress(2 * eval_episodes, "eval", unit="tracks") as on_eval:
        result = run_demo(
            opts,
            on_stage=lambda name: out.print(f"[bold]{titles[name]}[/]"),
            on_collect=on_collect,
            train_progress=RichProgress(err, title="train"),
            on_eval=on_eval,
        )
    render_report(out, result.reports)
    table = Table(title="where things are", show_header=False)
    table.add_row("dataset", f"{result.dataset} ({result.info['frames']} frames)")
    table.add_row("histograms", str(result.histogram))
    table.add_row("policy run", f"{result.run} (TensorBoard: {result.run}/tb)")
    table.add_row("report", str(result.report_path))
    table.add_row("time", ", ".join(f"{k} {v:.0f} s" for k, v in result.stage_seconds.items()))
    out.print(table)
    ratio = result.reports[0].aggregate.get("score_ratio_to_expert", float("nan"))
    out.print(f"[green]done[/]: policy driving score {result.reports[0].aggregate['score_mean']:.3f} "
              f"= {ratio:.2f} x the expert's on the same held-out tracks")


# --------------------------------------------------------------------------- entry point
def main() -> None:
    """Console-script entry: run the app, turning user mistakes into one error line."""
    os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
    try:
        app()
    except DrivelabError as exc:
        err.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:
        err.print("[yellow]interrupted[/]: committed work is kept")
        sys.exit(130)


if __name__ == "__main__":
    main()
