"""``RUN/live.jsonl``: what the live loop did, one JSON row per event, and its TensorBoard view.

Rows (``kind``): ``collector`` (a collector's pid at start), ``episode`` (committed: index,
frames, slot, β, version, who drove), ``crash`` (a collector died; its episode was discarded),
``period`` (the trainer's window: episodes, frames, batch, samples/s), ``version`` (published),
``play`` (the player's drive and hot-swap delay). Rows wait in memory until the run folder exists
(the first period creates it), then go out with one ``write`` each on an O_APPEND descriptor.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from drivelab.runs.metrics import read_json_lines
from drivelab.watch.player import _append_row as append_row

LEDGER = "live.jsonl"
LIVE_TB = "live"


class LiveLedger:
    def __init__(self, run: Path | None = None) -> None:
        self.run: Path | None = None
        self.rows: list[dict[str, Any]] = []
        self._waiting: list[dict[str, Any]] = []
        self._writer: Any = None
        if run is not None:
            self.rows = read_ledger(run)
            self.attach(run)

    def attach(self, run: Path) -> None:
        """The run folder exists now: write the rows kept so far and open the TensorBoard view."""
        from torch.utils.tensorboard import SummaryWriter

        self.run = Path(run)
        self._writer = SummaryWriter(str(self.run / "tb" / LIVE_TB))
        for row in self._waiting:
            self._append(row)
        self._waiting = []

    def add(self, kind: str, **values: Any) -> dict[str, Any]:
        row = {"kind": kind, "time": round(time.time(), 3), **values}
        self.rows.append(row)
        if self.run is None:
            self._waiting.append(row)
        else:
            self._append(row)
        return row

    def scalar(self, tag: str, value: float, step: int) -> None:
        if self._writer is not None:
            self._writer.add_scalar(tag, value, global_step=step)

    def _append(self, row: dict[str, Any]) -> None:
        assert self.run is not None
        append_row(self.run / LEDGER, row)  # watch.jsonl's writer: whole lines only

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [r for r in self.rows if r.get("kind") == kind]

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()


def read_ledger(run: Path) -> list[dict[str, Any]]:
    """Every whole row (a torn last line from a killed driver is skipped)."""
    return read_json_lines(Path(run) / LEDGER)
