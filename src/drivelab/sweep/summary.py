"""A trial's numbers, read back from its run folder: what the results table averages over seeds."""

from __future__ import annotations

import json
import math
from typing import Any

from drivelab.runs.folder import RunFolder
from drivelab.runs.metrics import read_metrics

#: Closed-loop aggregates a trial keeps (means over its tracks).
DRIVING_KEYS = {"score": "score_mean", "reward": "reward_mean", "completion": "completion_mean",
                "laps": "laps_finished", "off_track_events": "off_track_events_mean"}


def summarize_run(run: RunFolder, evaluation: dict[str, Any] | None) -> dict[str, Any]:
    """Final and best validation values (every val/* key), the data size, speed and driving."""
    rows = read_metrics(run.metrics_path)
    val_rows = [r for r in rows if any(k.startswith("val/") for k in r)]
    train_rows = [r for r in rows if "samples_per_s" in r]
    result: dict[str, Any] = {"batches": rows[-1]["batch"] if rows else 0}
    if val_rows:
        for key in (k for k in val_rows[-1] if k.startswith("val/")):
            values = [(r["batch"], float(r[key])) for r in val_rows if _finite(r.get(key))]
            if not values:
                continue
            result[key] = values[-1][1]
            best = min(values, key=lambda bv: bv[1]) if _lower_is_better(key) else max(values, key=lambda bv: bv[1])
            result[f"best_{key}"] = best[1]
            result[f"best_{key}_batch"] = best[0]
    if train_rows:
        speeds = [float(r["samples_per_s"]) for r in train_rows[1:] or train_rows]
        result["samples_per_s"] = sorted(speeds)[len(speeds) // 2]
    try:
        data = json.loads((run.path / "run.json").read_text()).get("data", {})
        result["train_frames"] = data.get("train_samples")
    except (OSError, json.JSONDecodeError):
        pass
    if evaluation is not None:
        result["tracks"] = evaluation.get("episodes")
        for name, key in DRIVING_KEYS.items():
            if evaluation.get(key) is not None:
                result[name] = float(evaluation[key])
    return result


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


def _lower_is_better(key: str) -> bool:
    return not key.endswith(("accuracy", "score", "reward"))
