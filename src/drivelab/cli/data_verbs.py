"""Verbs that make and inspect datasets: `collect`, `data info`, `data verify`, `data balance`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from drivelab.cli.app import FORCE_OPTION, app, data_app, err, lazy_progress, out
from drivelab.errors import DrivelabError
from drivelab.outputs import check_output, is_stdout, write_json
from drivelab.seeds import COLLECTION_SEED, DEFAULT_ENV
from drivelab.workers import DEFAULT_WORKERS


# --------------------------------------------------------------------------- collect
@app.command()
def collect(
    out_path: Annotated[Path, typer.Option("--out", help="Dataset folder (Zarr v3) to create.")],
    episodes: Annotated[int, typer.Option(help="Episodes to record.")] = 4,
    env: Annotated[str, typer.Option(help=f"`{DEFAULT_ENV}` or a gymnasium id with image frames.")] = DEFAULT_ENV,
    workers: Annotated[int, typer.Option(help="Parallel worker processes, each with its own env.")] = DEFAULT_WORKERS,
    seed: Annotated[int, typer.Option(help="Episode i drives track seed SEED+i.")] = COLLECTION_SEED,
    noise: Annotated[float, typer.Option(help="DART noise: chance per step to start a perturbation.")] = 0.0,
    noise_hold: Annotated[int | None, typer.Option(
        help="Steps a perturbation is held (default: 0.2 s of the env's steps, 10 at CarRacing's 50 fps).")] = None,
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
    table = Table(title=f"{escape(str(summary.path))}: {len(summary.indices)} episodes recorded")
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
        f"([cyan]{summary.frames_per_s:.0f} frames/s[/]) -> {escape(str(summary.path))}"
    )


# --------------------------------------------------------------------------- data
@data_app.command("info")
def data_info(
    path: Annotated[Path, typer.Argument(help="Dataset folder.")],
    json_out: Annotated[Path | None, typer.Option(
        "--json", help="Write the facts as JSON to this file (-: stdout, instead of the tables).")] = None,
    plot: Annotated[Path | None, typer.Option(help="Write per-output histograms to this PNG.")] = None,
    force: Annotated[bool, FORCE_OPTION] = False,
) -> None:
    """Episodes, frames, splits and per-signal statistics of a dataset."""
    from drivelab.data.edit import describe_edits
    from drivelab.data.inspect import dataset_info, plot_histograms
    from drivelab.data.store import DatasetStore

    if plot is not None:
        check_output(plot, "--plot", (".png",), force=force)
    if json_out is not None:
        check_output(json_out, "--json", (".json",), force=force)
    store = DatasetStore.open(path)
    info = dataset_info(store)
    if plot is not None:
        written = plot_histograms(store, plot, force=force)
        info["plot"] = str(written)
    if json_out is not None:
        write_json(json_out, info, force=force, flag="--json")
        if is_stdout(json_out):
            return
    out.print(
        f"[bold]{escape(str(info['path']))}[/]  {escape(str(info['env_id']))} @ {info['fps']:g} fps, frames "
        f"{'x'.join(map(str, info['frame_shape']))}, format v{info['version']}"
    )
    out.print(f"{info['episodes']} episodes, {info['frames']} frames")
    splits = Table(title="splits")
    for col in ("split", "episodes", "frames"):
        splits.add_column(col, justify="right")
    for name, s in info["splits"].items():
        splits.add_row(escape(name), str(s["episodes"]), str(s["frames"]))
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
        sig.add_row(f"[bold]{escape(kind)}[/]", "", "", "", "", "")
        for name, s in entries.items():
            if "mean" in s:
                flag = f" [red]({s['nonfinite']} NaN/Inf)[/]" if s.get("nonfinite") else ""
                sig.add_row(f"  {escape(name)}{flag}", escape(str(s["unit"])), fmt(s["mean"]), fmt(s["std"]), fmt(s["min"]), fmt(s["max"]))
    out.print(sig)
    if info["frame_stats"]:
        fs = info["frame_stats"]
        out.print(
            "frame mean (RGB, /255): " + ", ".join(f"{v:.3f}" for v in fs["mean"])
            + "   std: " + ", ".join(f"{v:.3f}" for v in fs["std"])
        )
    for line in describe_edits(info):
        out.print(f"made by data edit: {line}", markup=False, highlight=False, soft_wrap=True)
    _print_data_warnings(info)
    if plot is not None:
        out.print(f"histograms -> {info['plot']}", markup=False, highlight=False)


def _print_data_warnings(info: dict) -> None:
    """`data info`'s lines about what needs `data verify`: damage, NaN/Inf, leftovers."""
    path = escape(str(info["path"]))
    for group in info["damaged"]:
        out.print(f"[red]damaged[/] {escape(str(group['path']))}: {escape(str(group['reason']))} (run `drivelab data verify {path}`)",
                  highlight=False, soft_wrap=True)
    bad = info["nonfinite"]
    if bad["values"]:
        where = escape(", ".join(f"{k} {n}" for k, n in bad["per_signal"].items()))
        out.print(f"[red]{bad['values']} non-finite (NaN/Inf) value(s)[/] in episode(s) "
                  f"{', '.join(f'{i:06d}' for i in bad['episodes'])} ({where}): training on them fails; "
                  f"run `drivelab data verify {path}`", highlight=False, soft_wrap=True)
    if bad["unreadable"]:
        more = ", ..." if len(bad["unreadable"]) > 1 else ""
        out.print(f"[red]{len(bad['unreadable'])} unreadable array(s)[/] ({escape(str(bad['unreadable'][0]))}{more}): "
                  f"run `drivelab data verify {path}`", highlight=False, soft_wrap=True)
    if info["leftovers"]:
        state = "being written by a collector" if info["writer_active"] else "uncommitted leftovers"
        out.print(f"[yellow]{len(info['leftovers'])} {state}[/] (see `drivelab data verify`)")


@data_app.command("verify")
def data_verify(
    path: Annotated[Path, typer.Argument(help="Dataset folder.")],
    remove_leftovers: Annotated[
        bool, typer.Option("--remove-leftovers", help="Delete uncommitted leftovers.")
    ] = False,
) -> None:
    """Read every committed episode and check shapes, dtypes and values."""
    from drivelab.data.inspect import verify_dataset
    from drivelab.data.skeleton import interrupted_skeleton, remove_skeleton
    from drivelab.data.store import DatasetStore

    skeleton = interrupted_skeleton(path)
    if skeleton is not None and remove_leftovers:  # no zarr.json: nothing was ever committed
        remove_skeleton(path)
        out.print(f"removed {path}: the remains of an interrupted write ({len(skeleton)} uncommitted "
                  "staging group(s), no zarr.json); nothing committed was lost", highlight=False, markup=False)
        return
    store = DatasetStore.open(path)
    report = verify_dataset(store)
    for problem in report.problems:
        err.print(f"[red]problem:[/] {escape(str(problem))}", highlight=False, soft_wrap=True)
    for warning in report.warnings:
        err.print(f"[yellow]warning:[/] {escape(str(warning))}", highlight=False, soft_wrap=True)
    for rel in report.foreign:
        out.print(f"[yellow]unknown[/] {escape(str(rel))} (not made by drivelab; left alone)", highlight=False)
    if report.leftovers:
        if report.writer_active:
            for rel in report.leftovers:
                out.print(f"in progress: {rel} (a collector is writing it)", markup=False, highlight=False)
        elif not remove_leftovers:
            for rel in report.leftovers:
                out.print(f"[yellow]leftover[/] {escape(str(rel))} (never committed; --remove-leftovers deletes it)",
                          highlight=False)
    removed: list[str] = []
    if remove_leftovers and (report.leftovers or report.writer_active):
        removed = store.remove_leftovers()  # refuses, removing nothing, while a collector writes
        for rel in removed:
            out.print(f"removed leftover {rel}", markup=False, highlight=False)
    if not report.ok:
        damaged = f", {len(report.damaged)} damaged episode group(s) kept" if report.damaged else ""
        changed = "only never-committed leftovers were removed" if removed else "nothing was changed"
        raise DrivelabError(
            f"{path}: {len(report.problems)} problem(s) in {report.episodes} committed episodes"
            f"{damaged} (listed above; {changed})"
        )
    out.print(f"[green]ok[/]: {report.episodes} committed episodes, {report.frames} frames intact")




@data_app.command("balance")
def data_balance(
    path: Annotated[Path, typer.Argument(help="Dataset folder.")],
    scheme: Annotated[str, typer.Option(help="none, v1, v2, v3, v4, inverse_frequency or normalized_output.")] = "none",
    bins: Annotated[str, typer.Option(help="Bin preset: v1 (Charles lists) or v2 (0.1-wide + exact).")] = "v2",
    output: Annotated[list[str] | None, typer.Option(help="Action output to balance (repeatable; default all).")] = None,
    plot: Annotated[Path | None, typer.Option(help="Write before/after histograms to this PNG.")] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the report as JSON to this file.")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the scheme's random draws.")] = 0,
    skip_empty: Annotated[bool, typer.Option("--skip-empty", help="Drop empty bins instead of failing.")] = False,
    power: Annotated[float, typer.Option(help="inverse_frequency: weight = count^-power.")] = 1.0,
    batch_size: Annotated[int, typer.Option(help="normalized_output: batch the 1/3 cap applies to.")] = 32,
    candidates: Annotated[int, typer.Option(help="v4: candidates per draw.")] = 8,
    force: Annotated[bool, FORCE_OPTION] = False,
) -> None:
    """Per-output bin counts and entropy before/after a balancing scheme (reads no frames)."""
    from drivelab.data.store import DatasetStore
    from drivelab.order.balance import BinnedLabels
    from drivelab.order.report import balance_report, dataset_labels, plot_balance

    if plot is not None:
        check_output(plot, "--plot", (".png",), force=force)
    if json_out is not None:
        check_output(json_out, "--json", force=force)
    if plot is not None and json_out is not None and plot.resolve() == json_out.resolve():
        raise DrivelabError("--plot and --json name the same file: give each its own")
    store = DatasetStore.open(path)
    values, binnings = dataset_labels(store, output, bins)
    report = balance_report(BinnedLabels.from_values(values, binnings), scheme, seed=seed,
                            skip_empty=skip_empty, power=power, batch_size=batch_size,
                            candidates=candidates)
    report["bins_preset"] = bins
    table = Table(title=escape(f"{path}: balancing {scheme} (bins {bins})"))
    for col in ("output", "bins", "non-empty", "entropy before", "entropy after", "max"):
        table.add_column(col, justify="right")
    for name, o in report["outputs"].items():
        table.add_row(escape(name), str(len(o["bins"])), str(sum(1 for c in o["counts_before"] if c)),
                      f"{o['entropy_before']:.3f}", f"{o['entropy_after']:.3f}", f"{o['entropy_max']:.3f}")
    out.print(table)
    rounds = f", {report['rounds_available']} round(s) available" if "rounds_available" in report else ""
    out.print(f"{report['frames_before']} frames -> {report['frames_kept']} kept "
              f"({report['unique_frames']} distinct), effective sample size "
              f"{report['effective_sample_size']:.1f}{rounds}")
    if plot is not None:
        report["plot"] = str(plot_balance(report, plot, force=force))
        out.print(f"histograms -> {report['plot']}", markup=False, highlight=False)
    if json_out is not None:
        write_json(json_out, report, force=force, flag="--json")
        out.print(f"report -> {json_out}", markup=False, highlight=False)
# --------------------------------------------------------------------------- data import / synth-signs
import_app = typer.Typer(no_args_is_help=True, rich_markup_mode=None, help="Import image-classification sets (GTSRB, ImageFolder).")
data_app.add_typer(import_app, name="import")

_OutOpt = Annotated[Path, typer.Option("--out", help="Dataset folder (Zarr v3) to create; never overwritten.")]
_SizeOpt = Annotated[int, typer.Option(help="Images are resized to SIZE x SIZE pixels.")]
_ValOpt = Annotated[float, typer.Option(help="Fraction of every class held out as val (stratified).")]
_SeedOpt = Annotated[int, typer.Option(help="Seed of the val split.")]
_BadOpt = Annotated[str, typer.Option(help="An image that fails to decode: `skip` (counted) or `stop`.")]


class _ImportProgress:
    """Progress bar that appears on the importer's first report, when the total is known.

    The importer only knows how many episodes it writes after scanning (and checking) every
    CSV. The bar is transient (gone when it stops, never echoed to a pipe), so an import that
    stops on a bad image still ends in exactly one error line.
    """

    def __init__(self) -> None:
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        self._progress = Progress(
            TextColumn("[bold]import[/]"), BarColumn(), TextColumn("{task.completed}/{task.total} episodes"),
            TextColumn("{task.fields[images]} images"), TimeElapsedColumn(), console=err, transient=True,
        )
        self._task: int | None = None
        self._images = 0

    def __call__(self, images: int, done: int, total: int) -> None:
        if self._task is None:
            self._task = self._progress.add_task("import", total=total, images=0)
            self._progress.start()
        self._images += images
        self._progress.update(self._task, completed=done, images=self._images)

    def __enter__(self) -> _ImportProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.stop()


def _report_import(summary: object) -> None:
    """Per-class counts per split: the class balance is the first thing to check on GTSRB."""
    from drivelab.data.importers import ImportSummary

    if not isinstance(summary, ImportSummary):
        raise TypeError(f"expected an ImportSummary, got {type(summary).__name__}")
    table = Table(title=escape(f"{summary.path}: {summary.images} images, {len(summary.class_names)} "
                               f"classes ({summary.source})"))
    for col in ("class", "name", "train", "val", "test"):
        table.add_column(col, justify="left" if col == "name" else "right")
    for i, name in enumerate(summary.class_names):
        table.add_row(str(i), escape(name), *(str(summary.counts[s][i]) for s in ("train", "val", "test")))
    out.print(table)
    if summary.skipped:
        shown = escape(", ".join(summary.skipped_files[:5]) + (" ..." if summary.skipped > 5 else ""))
        err.print(f"[yellow]skipped {summary.skipped} image(s) that failed to decode[/]: {shown}")


@import_app.command("gtsrb")
def data_import_gtsrb(
    path: Annotated[Path, typer.Argument(help="GTSRB folder holding Final_Training/ (and Final_Test/).")],
    out_path: _OutOpt,
    size: _SizeOpt = 48,
    roi: Annotated[bool, typer.Option("--roi", help="Crop each image to its CSV ROI box first.")] = False,
    val_fraction: _ValOpt = 0.1,
    seed: _SeedOpt = 0,
    on_bad_image: _BadOpt = "skip",
) -> None:
    """Import the official GTSRB layout (per-class GT-000NN.csv; test set from GT-final_test.csv)."""
    from drivelab.data.gtsrb import import_gtsrb
    from drivelab.data.importers import ImportOptions

    options = ImportOptions(size=size, roi=roi, val_fraction=val_fraction, seed=seed, on_bad_image=on_bad_image)
    with _ImportProgress() as on_progress:
        summary = import_gtsrb(path, out_path, options, on_progress=on_progress)
    _report_import(summary)


@import_app.command("imagefolder")
def data_import_imagefolder(
    path: Annotated[Path, typer.Argument(help="Folder with one sub-folder of images per class.")],
    out_path: _OutOpt,
    size: _SizeOpt = 48,
    val_fraction: _ValOpt = 0.1,
    seed: _SeedOpt = 0,
    on_bad_image: _BadOpt = "skip",
) -> None:
    """Import an ImageFolder layout: class names are the sorted sub-folder names."""
    from drivelab.data.importers import ImportOptions, import_imagefolder

    options = ImportOptions(size=size, val_fraction=val_fraction, seed=seed, on_bad_image=on_bad_image)
    with _ImportProgress() as on_progress:
        summary = import_imagefolder(path, out_path, options, on_progress=on_progress)
    _report_import(summary)


@data_app.command("synth-signs")
def data_synth_signs(
    out_path: Annotated[Path, typer.Option("--out", help="Folder to create (GTSRB layout).")],
    classes: Annotated[int, typer.Option(help="Number of sign classes.")] = 43,
    per_class: Annotated[int, typer.Option(help="Training images per class.")] = 30,
    test_per_class: Annotated[
        int | None, typer.Option(help="Test images per class (default: per-class / 3).")
    ] = None,
    seed: Annotated[int, typer.Option(help="Same seed, same images.")] = 0,
    size: Annotated[int, typer.Option(help="Nominal image side; images vary 0.4-1.25x around it.")] = 64,
) -> None:
    """Draw SYNTHETIC sign images in the official GTSRB layout (for demos and tests, no download)."""
    from drivelab.data.synth_signs import synthesize_signs

    summary = synthesize_signs(out_path, classes=classes, per_class=per_class, seed=seed, size=size,
                               test_per_class=test_per_class)
    out.print(
        f"[bold]synthetic[/] GTSRB layout: {summary.classes} classes, {summary.train_images} training + "
        f"{summary.test_images} test images -> {escape(str(summary.path))} (import with `drivelab data import gtsrb`)"
    )
