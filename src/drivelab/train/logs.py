"""Training logs: ``metrics.jsonl`` rows and TensorBoard scalars with the same names.

Names follow Charles' TensorBoard logs so old and new curves line up: total ``loss``,
``<output>_loss`` and ``<output>_mean_absolute_error`` per output, ``lr``; validation rows carry
the same names prefixed ``val/``. Only rank 0 writes. A resumed period opens its TensorBoard
writer with ``purge_step`` at the resume batch, so TensorBoard drops the points the killed session
logged after its last checkpoint instead of drawing two curves over the same batches;
``metrics.jsonl`` keeps every row (nothing is overwritten) and tags each with its period, so a
reader takes the latest period's row for a batch.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from torch.utils.tensorboard import SummaryWriter


class MetricsLog:
    """Append-only metrics for one training period of a run (rank 0 only)."""

    def __init__(self, metrics_path: Path, tb_dir: Path, period: int, first_batch: int) -> None:
        self.period = period
        self._rows = open(metrics_path, "a", encoding="utf-8")  # noqa: SIM115 (closed in close())
        _wait_past_event_files(tb_dir)
        self._tb = SummaryWriter(str(tb_dir), purge_step=first_batch + 1 if first_batch > 0 else None)

    def write(self, batch: int, values: dict[str, float], **extra: Any) -> None:
        """One row at ``batch`` (the number of updates done): jsonl and TensorBoard scalars."""
        row = {"batch": batch, "period": self.period, "time": round(time.time(), 3), **extra}
        for key, value in values.items():
            row[key] = value if math.isfinite(value) else str(value)
            self._tb.add_scalar(key, value, global_step=batch)
        self._rows.write(json.dumps(row) + "\n")
        self._rows.flush()

    def flush(self) -> None:
        self._rows.flush()
        self._tb.flush()

    def close(self) -> None:
        self._rows.close()
        self._tb.close()

    def __enter__(self) -> MetricsLog:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _wait_past_event_files(tb_dir: Path) -> None:
    """Make sure this period's event file sorts after every earlier one.

    TensorBoard reads a folder's event files in name order, and the name starts with the
    creation time in whole seconds; a resume within the same second as the killed session's
    start would sort first and its purge of the killed tail would come too early.
    """
    stamps = [
        int(parts[3])
        for f in tb_dir.glob("events.out.tfevents.*")
        if len(parts := f.name.split(".")) > 3 and parts[3].isdigit()
    ]
    if stamps:
        while int(time.time()) <= max(stamps):
            time.sleep(0.05)
