"""A rich progress bar for training: batches, rate, the latest train and val loss.

The loop reports to any `ProgressSink`; this one draws on stderr so stdout stays clean for the
final summary (and for scripts that parse it).
"""

from __future__ import annotations

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


class RichProgress:
    """`ProgressSink` drawing one bar: batches done of total, loss, val loss, ETA."""

    def __init__(self, console: Console, title: str = "train") -> None:
        self._progress = Progress(
            TextColumn(f"[bold]{title}[/]"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("batches"),
            TextColumn("{task.fields[metrics]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console,
            transient=False,
        )
        self._task: int | None = None

    def start(self, total: int, done: int) -> None:
        self._progress.start()
        self._task = self._progress.add_task("train", total=total, completed=done, metrics="")

    def advance(self, done: int) -> None:
        if self._task is not None:
            self._progress.update(self._task, completed=done)

    def show(self, values: dict[str, float]) -> None:
        if self._task is None:
            return
        text = "  ".join(f"{k} {v:.4f}" for k, v in values.items() if k in ("loss", "val/loss"))
        self._progress.update(self._task, metrics=text)

    def close(self) -> None:
        if self._task is not None:
            self._progress.stop()
            self._task = None
