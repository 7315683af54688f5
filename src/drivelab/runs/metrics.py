"""Reading a run's metric rows: ``metrics.jsonl`` (the trainer's) and ``watch.jsonl`` (the player's).

The writer is the trainer's `drivelab.train.logs.MetricsLog`; readers (cards, compare, lines,
benchmarks, the watch player) only need this module, which imports neither torch nor the trainer.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

#: The watch player's rows, next to ``metrics.jsonl`` (`drivelab.watch` says why it keeps
#: a file of its own).
WATCH_ROWS = "watch.jsonl"


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """Rows of ``metrics.jsonl``, and of the watch player's ``watch.jsonl`` beside it, by batch.

    For a batch logged in several periods the latest period wins. At one batch the train row
    comes first, then validation, then watch (`drivelab.watch` says why the player keeps
    a file of its own).
    """
    latest: dict[tuple[int, int], dict[str, Any]] = {}
    for source in (path, path.with_name(WATCH_ROWS)):
        if not source.is_file():
            continue
        for line in source.read_text().splitlines():
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:  # a killed writer's torn last line
                continue
            kind = 2 if any(k.startswith("watch/") for k in row) else int(any(k.startswith("val/") for k in row))
            latest[(row["batch"], kind)] = row
    return [latest[k] for k in sorted(latest)]
