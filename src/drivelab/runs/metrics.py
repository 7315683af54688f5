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


def read_json_lines(path: Path) -> list[dict[str, Any]]:
    """Every whole row of a JSON-lines file a writer appends to (empty when there is no file).

    A writer killed mid-line leaves a torn last line: it is skipped, never an error.
    """
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """Rows of ``metrics.jsonl``, and of the watch player's ``watch.jsonl`` beside it, by batch.

    For a batch logged in several periods the latest period wins. At one batch the train row
    comes first, then validation, then watch (`drivelab.watch` says why the player keeps
    a file of its own).
    """
    latest: dict[tuple[int, int], dict[str, Any]] = {}
    for source in (path, path.with_name(WATCH_ROWS)):
        for row in read_json_lines(source):
            kind = 2 if any(k.startswith("watch/") for k in row) else int(any(k.startswith("val/") for k in row))
            latest[(row["batch"], kind)] = row
    return [latest[k] for k in sorted(latest)]
