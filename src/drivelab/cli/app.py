"""The Typer application, its consoles and the progress display every verb shares."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

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

# Every verb that writes a user-named file offers the same escape hatch (see drivelab.outputs).
FORCE_OPTION = typer.Option("--force", help="Replace existing output files (never datasets or run files).")


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


