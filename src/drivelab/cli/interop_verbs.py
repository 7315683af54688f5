"""`data import donkeycar|lerobot` and `data export lerobot`: datasets from and to the ecosystem.

Wiring only: the formats live in `drivelab.interop`. The import verbs join the existing
`data import` sub-app (next to gtsrb and imagefolder); `data export` is new.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from drivelab.cli.app import data_app, err, lazy_progress, out
from drivelab.cli.data_verbs import import_app

export_app = typer.Typer(no_args_is_help=True, rich_markup_mode=None, help="Write a drivelab dataset in another tool's format (LeRobot).")
data_app.add_typer(export_app, name="export")

_Out = Annotated[Path, typer.Option("--out", help="Dataset folder to create; never overwritten.")]
_Val = Annotated[int, typer.Option(help="Last episodes (before test) for the val split.")]
_Test = Annotated[int, typer.Option(help="Last episodes for the test split.")]
#: Lines holding paths, keys and task texts from the user's files: printed as they are, no rich
#: markup ("[red]" in a path) or emoji codes (":x:" in a key) interpreted.
_PLAIN = {"markup": False, "emoji": False, "highlight": False, "soft_wrap": True}


@import_app.command("donkeycar")
def data_import_donkeycar(
    tubs: Annotated[list[Path], typer.Argument(help="donkeycar tub folder(s), v2 (manifest.json) or v1 (meta.json).")],
    out_path: _Out,
    size: Annotated[tuple[int, int] | None, typer.Option(help="Resize frames to H W (default: the tub's size).")] = None,
    val_episodes: _Val = 0,
    test_episodes: _Test = 0,
    gap: Annotated[float, typer.Option(help="Seconds between records that start a new episode.")] = 1.0,
    mode: Annotated[str | None, typer.Option(help="`user`: keep human-driven frames only.")] = None,
) -> None:
    """Import donkeycar tubs: user/angle -> steering, user/throttle -> accel_brake, sessions -> episodes."""
    from drivelab.interop.donkeycar import DonkeyOptions, import_donkeycar

    options = DonkeyOptions(size=size, val_episodes=val_episodes, test_episodes=test_episodes, gap_s=gap, mode=mode)
    with lazy_progress(0, "import", unit="episodes") as on_progress:
        report = import_donkeycar(tubs, out_path, options, on_progress=on_progress)
    out.print(f"{report.tubs} tub(s) -> {report.episodes} episodes, {report.frames} frames @ {report.fps:g} fps "
              f"in {report.seconds:.1f} s ({report.frames_per_s:.0f} frames/s) -> {report.path}", **_PLAIN)
    out.print(f"telemetry: {', '.join(f'{n} <- {k}' for n, k in report.telemetry.items()) or 'none'}", **_PLAIN)
    skipped = [f"{report.deleted} deleted record(s)"] + ([f"{report.other_mode} non-{mode} frame(s)"] if mode else [])
    out.print(f"skipped: {', '.join(skipped)}" + (f"; dropped keys (missing in some records): "
                                                     f"{', '.join(report.dropped_keys)}" if report.dropped_keys else ""),
              **_PLAIN)


@import_app.command("lerobot")
def data_import_lerobot(
    path: Annotated[Path, typer.Argument(help="LeRobot v3.0 dataset folder (meta/info.json, data/, videos/).")],
    out_path: _Out,
    camera: Annotated[str | None, typer.Option(help="Camera feature to import (default observation.images.front or the first).")] = None,
    val_episodes: _Val = 0,
    test_episodes: _Test = 0,
) -> None:
    """Import a LeRobot dataset: observation.state -> telemetry, action -> actions, one camera -> frames."""
    from drivelab.interop.lerobot_import import import_lerobot

    with lazy_progress(0, "import", unit="episodes") as on_progress:
        report = import_lerobot(path, out_path, camera=camera, val_episodes=val_episodes,
                                test_episodes=test_episodes, on_progress=on_progress)
    how = "drivelab signals restored from meta/drivelab.json" if report.exact else "signals named from the features"
    out.print(f"{report.episodes} episodes, {report.frames} frames ({report.camera}, {report.storage}; {how}) -> "
              f"{report.path}", **_PLAIN)


@export_app.command("lerobot")
def data_export_lerobot(
    dataset: Annotated[Path, typer.Argument(help="drivelab dataset folder.")],
    out_path: Annotated[Path, typer.Option("--out", help="LeRobot dataset folder to create; never overwritten.")],
    images: Annotated[bool, typer.Option("--images", help="Store frames as PNG in the table (lossless) instead of video.")] = False,
    codec: Annotated[str, typer.Option(help="Video codec: av1 (LeRobot's default) or h264.")] = "av1",
    task: Annotated[str | None, typer.Option(help="Task text of every frame (default: `drive <env id>`).")] = None,
) -> None:
    """Write a dataset as LeRobot v3.0 (meta/info.json, parquet tables, MP4 or PNG frames, stats)."""
    from drivelab.interop.lerobot_export import export_lerobot

    with lazy_progress(0, "export", unit="episodes") as on_progress:
        report = export_lerobot(dataset, out_path, images=images, codec=codec, task=task, on_progress=on_progress)
    out.print(f"{report.episodes} episodes, {report.frames} frames, frames as {report.storage} -> {report.path}",
              **_PLAIN)
    err.print(f"features: {', '.join(report.features)}", **_PLAIN)
