"""The sweep's results: one row per cell, mean ± std (n) over seeds, the best cell marked.

"Exceeds the seed spread" is stated per cell against the best one with a deliberately simple,
visible rule: the difference of the means is larger than the sum of the two cells' seed standard
deviations (their ±1 std bars do not overlap). With three seeds a significance test would claim
more than the data hold; the rule says which gaps are worth a second look.

Figures: one per validation metric, every cell's mean curve over its seeds and the min–max band
(kkelchte's combine_results look), read from the runs' own ``metrics.jsonl``.
"""

from __future__ import annotations

import csv
import io
import json
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from drivelab.outputs import write_generated
from drivelab.runs.metrics import read_metrics
from drivelab.sweep.folder import SweepFolder
from drivelab.sweep.spec import SweepPlan

#: Column order of the tables (present keys only); other val/* keys follow.
LEADING = ("score", "reward", "laps", "val/loss", "best_val/loss", "train_frames", "samples_per_s")


@dataclass
class CellResult:
    name: str
    values: dict[str, Any]
    finished: int = 0
    failed: int = 0
    pending: int = 0
    reasons: list[str] = field(default_factory=list)
    numbers: dict[str, list[float]] = field(default_factory=dict)

    def mean_std(self, key: str) -> tuple[float, float, int] | None:
        values = self.numbers.get(key, [])
        if not values:
            return None
        # one seed has no spread: NaN (never 0.0, which reads as "perfectly repeatable")
        std = statistics.stdev(values) if len(values) > 1 else math.nan
        return statistics.fmean(values), std, len(values)


def cell_results(plan: SweepPlan, folder: SweepFolder) -> list[CellResult]:
    cells = {c.name: CellResult(c.name, c.values) for c in plan.cells}
    for trial in plan.trials:
        cell = cells[trial.cell.name]
        record = folder.read_trial(trial.name) or {}
        status = record.get("status")
        if status == "finished":
            cell.finished += 1
            for key, value in (record.get("result") or {}).items():
                if isinstance(value, int | float) and math.isfinite(value) and not key.endswith("_batch"):
                    cell.numbers.setdefault(key, []).append(float(value))
        elif status == "failed":
            cell.failed += 1
            cell.reasons.append(str(record.get("reason", "")))
        else:
            cell.pending += 1
    return list(cells.values())


def ranking_key(plan: SweepPlan) -> str:
    metric = plan.spec.metric
    return metric.name if metric.at == "final" or not metric.name.startswith("val/") else f"best_{metric.name}"


def best_cell(plan: SweepPlan, cells: list[CellResult]) -> CellResult | None:
    key = ranking_key(plan)
    scored = [(c, s) for c in cells if (s := c.mean_std(key)) is not None]
    if not scored:
        return None
    pick = max if plan.spec.metric.mode == "max" else min
    return pick(scored, key=lambda cs: cs[1][0])[0]


#: Seeds a cell needs before its spread means anything: one seed has no spread (its std is not 0).
MIN_SEEDS_FOR_SPREAD = 2


def exceeds_spread(a: tuple[float, float, int], b: tuple[float, float, int]) -> bool | None:
    """The module's rule: |mean_a - mean_b| > std_a + std_b; None (cannot tell) when either cell
    has fewer than two seeds, whose "std 0" would let any gap look real."""
    if min(a[2], b[2]) < MIN_SEEDS_FOR_SPREAD:
        return None
    return abs(a[0] - b[0]) > a[1] + b[1]


def spread_verdict(stat: tuple[float, float, int], best: tuple[float, float, int]) -> str:
    """The table's "vs best" cell: the gap and what the seeds say about it."""
    beyond = exceeds_spread(stat, best)
    said = {True: "exceeds spread", False: "within spread", None: "spread unknown (n < 2)"}[beyond]
    return f"{stat[0] - best[0]:+.3g}, {said}"


def columns(cells: list[CellResult]) -> list[str]:
    keys = {k for c in cells for k in c.numbers}
    lead = [k for k in LEADING if k in keys]
    rest = sorted(k for k in keys if k not in lead and k.startswith(("val/", "best_val/")))
    return lead + rest


def _pm(stat: tuple[float, float, int] | None) -> str:
    if stat is None:
        return "–"
    mean, std, n = stat
    digits = 3 if abs(mean) < 100 else 1
    spread = f"{std:.{digits}f}" if n >= MIN_SEEDS_FOR_SPREAD else "?"
    return f"{mean:.{digits}f} ± {spread} (n={n})"


def render_markdown(plan: SweepPlan, cells: list[CellResult]) -> str:
    key = ranking_key(plan)
    best = best_cell(plan, cells)
    shown = [k for k in columns(cells) if not k.startswith("best_val/") or k == "best_val/loss"]
    head = ["cell", "finished", "failed", *shown, f"vs best ({key})"]
    lines = [
        f"# Sweep {plan.spec.name}",
        "",
        f"Base config `{plan.spec.base.name}`; {len(plan.cells)} cells x "
        f"{len(plan.trials) // max(len(plan.cells), 1)} seeds; ranked by `{key}` "
        f"({plan.spec.metric.mode}); ★ = best cell. Values are mean ± std over seeds (n seeds).",
        "\"exceeds spread\": |Δ mean| > std(cell) + std(best); with one seed the spread is unknown (± ?).",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    best_stat = best.mean_std(key) if best is not None else None
    for cell in cells:
        stat = cell.mean_std(key)
        if cell is best:
            verdict = "best"
        elif stat is None or best_stat is None:
            verdict = "–"
        else:
            verdict = spread_verdict(stat, best_stat)
        name = f"★ **{cell.name}**" if cell is best else cell.name
        row = [name, str(cell.finished), str(cell.failed), *(_pm(cell.mean_std(k)) for k in shown), verdict]
        lines.append("| " + " | ".join(row) + " |")
    failures = [(c.name, r) for c in cells for r in c.reasons]
    if failures:
        lines += ["", "Failed trials:", *(f"- {name}: {reason}" for name, reason in failures)]
    return "\n".join(lines) + "\n"


def render_csv(cells: list[CellResult]) -> str:
    keys = columns(cells)
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["cell", "finished", "failed", *(f"{k}_{s}" for k in keys for s in ("mean", "std", "n"))])
    for cell in cells:
        row: list[Any] = [cell.name, cell.finished, cell.failed]
        for key in keys:
            stat = cell.mean_std(key)
            row += [stat[0], "" if math.isnan(stat[1]) else stat[1], stat[2]] if stat is not None else ["", "", 0]
        writer.writerow(row)
    return buffer.getvalue()


def write_results(plan: SweepPlan, folder: SweepFolder) -> list[Path]:
    """results.md / .csv / .json and the curve figures (regenerated on every call)."""
    cells = cell_results(plan, folder)
    best = best_cell(plan, cells)
    payload = {
        "sweep": plan.spec.name,
        "ranked_by": ranking_key(plan),
        "mode": plan.spec.metric.mode,
        "best": best.name if best else None,
        "cells": [
            {"cell": c.name, "values": c.values, "finished": c.finished, "failed": c.failed,
             "pending": c.pending, "failures": c.reasons,
             "metrics": {k: {"mean": s[0], "std": None if math.isnan(s[1]) else s[1], "n": s[2]}
                         for k in columns(cells) if (s := c.mean_std(k)) is not None}}
            for c in cells
        ],
        "trials": folder.ledger(),
    }
    written = [
        write_generated(folder.path / "results.md", render_markdown(plan, cells), flag="results"),
        write_generated(folder.path / "results.csv", render_csv(cells), flag="results"),
        write_generated(folder.path / "results.json", json.dumps(payload, indent=2) + "\n", flag="results"),
    ]
    return written + plot_curves(plan, folder)


def cell_curves(plan: SweepPlan, folder: SweepFolder) -> dict[str, dict[str, list[dict[int, float]]]]:
    """metric -> cell -> one {batch: value} per finished seed (validation rows only)."""
    curves: dict[str, dict[str, list[dict[int, float]]]] = {}
    for trial in plan.trials:
        record = folder.read_trial(trial.name) or {}
        if record.get("status") != "finished":
            continue
        per_metric: dict[str, dict[int, float]] = {}
        for row in read_metrics(Path(record["run"]) / "metrics.jsonl"):
            for key, value in row.items():
                if key.startswith("val/") and isinstance(value, int | float) and math.isfinite(value):
                    per_metric.setdefault(key, {})[int(row["batch"])] = float(value)
        for key, points in per_metric.items():
            curves.setdefault(key, {}).setdefault(trial.cell.name, []).append(points)
    return curves


def plot_curves(plan: SweepPlan, folder: SweepFolder) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    written = []
    for metric, by_cell in sorted(cell_curves(plan, folder).items()):
        fig, ax = plt.subplots(figsize=(7, 4))
        for cell, seeds in by_cell.items():
            batches = sorted(set.intersection(*(set(s) for s in seeds)))
            if not batches:
                continue
            values = np.array([[s[b] for b in batches] for s in seeds])
            line = ax.plot(batches, values.mean(0), label=f"{cell} (n={len(seeds)})")[0]
            ax.fill_between(batches, values.min(0), values.max(0), color=line.get_color(), alpha=0.2)
        ax.set_xlabel("batch")
        ax.set_ylabel(metric)
        ax.set_title(f"{plan.spec.name}: {metric} (mean over seeds, min–max band)")
        ax.legend(fontsize=7)
        fig.tight_layout()
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=110)
        plt.close(fig)
        folder.figures.mkdir(exist_ok=True)
        name = metric.replace("/", "_") + ".png"
        written.append(write_generated(folder.figures / name, buffer.getvalue(), flag="figures"))
    return written
