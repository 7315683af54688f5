"""Where a sweep stands, from its ledger alone: the progress line and ``--status``."""

from __future__ import annotations

from dataclasses import dataclass

from drivelab.sweep.folder import SweepFolder
from drivelab.sweep.results import best_cell, cell_results, ranking_key
from drivelab.sweep.spec import SweepPlan


@dataclass(frozen=True)
class SweepProgress:
    finished: int
    failed: int
    running: int
    pending: int
    best: str | None

    def line(self) -> str:
        best = f"; best so far {self.best}" if self.best else ""
        failed = f" ({self.failed} failed)" if self.failed else ""
        return (f"trials: {self.finished + self.failed} done{failed}, {self.running} running, "
                f"{self.pending} pending{best}")


def sweep_progress(plan: SweepPlan, folder: SweepFolder) -> SweepProgress:
    counts = {"finished": 0, "failed": 0, "running": 0}
    for trial in plan.trials:
        status = (folder.read_trial(trial.name) or {}).get("status")
        if status in counts:
            counts[status] += 1
    pending = len(plan.trials) - sum(counts.values())
    cells = cell_results(plan, folder)
    best = best_cell(plan, cells)
    text = None
    if best is not None:
        key = ranking_key(plan)
        stat = best.mean_std(key)
        assert stat is not None
        text = f"{best.name}: {key} {stat[0]:.4g} (n={stat[2]})"
    return SweepProgress(counts["finished"], counts["failed"], counts["running"], pending, text)
