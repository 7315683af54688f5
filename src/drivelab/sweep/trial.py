"""One trial, inside a Ray worker: train (or continue) its run, drive it, write its ledger record.

The trial is idempotent, which is what makes `--resume` safe after a kill -9 anywhere:

- a ledger record that says ``finished`` or ``failed`` is returned as it is (no file touched);
- a run folder with checkpoints continues from its last one through the trainer's own resume,
  so the trial ends bit-identical to one that was never interrupted;
- a run folder without a checkpoint (killed before the first one) is removed and started over.

The run's folder is known before training (`<line>_v<k>`, k = the seed's position), so finding
it again needs no state from Ray. A `DrivelabError` from training (a NaN loss, a memory guard)
marks the trial ``failed`` with the reason and the sweep goes on; anything else is a bug and
fails the trial in Ray with its traceback.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from drivelab.errors import DrivelabError
from drivelab.runs.checkpoints import list_checkpoints
from drivelab.runs.folder import RunFolder, now_iso
from drivelab.sweep.folder import FINAL, SweepFolder
from drivelab.sweep.resources import apply_trial_threads
from drivelab.sweep.spec import SweepPlan, Trial
from drivelab.sweep.summary import summarize_run


def run_path(folder: SweepFolder, plan: SweepPlan, trial: Trial) -> Path:
    """``runs/<line>/<line>_v<k>``: k is the seed's position among the cell's seeds (from 1)."""
    seeds = [t.seed for t in plan.trials if t.cell == trial.cell]
    version = seeds.index(trial.seed) + 1
    return folder.runs / trial.line / f"{trial.line}_v{version}"


def run_trial(plan: SweepPlan, folder: SweepFolder, name: str) -> dict[str, Any]:
    """Run trial ``name`` to its end; returns its ledger record (also written to disk)."""
    trial = plan.trial(name)
    record = folder.read_trial(name)
    if record is not None and record.get("status") in FINAL:
        return record
    apply_trial_threads(plan.spec.trial.cpus)
    path = run_path(folder, plan, trial)
    record = {
        "trial": name, "cell": trial.cell.name, "values": trial.cell.values, "seed": trial.seed,
        "run": str(path), "status": "running", "started": now_iso(),
        "attempts": int((record or {}).get("attempts", 0)) + 1,
    }
    folder.write_trial(name, record)
    started = time.perf_counter()
    try:
        _train(plan, folder, trial, path)
        evaluation = _drive(plan, path) if plan.spec.evaluate is not None else None
    except DrivelabError as exc:
        record.update(status="failed", reason=str(exc).splitlines()[0], ended=now_iso())
        folder.write_trial(name, record)
        return record
    record.update(
        status="finished", ended=now_iso(), seconds=round(time.perf_counter() - started, 1),
        result=summarize_run(RunFolder(path), evaluation),
    )
    folder.write_trial(name, record)
    return record


def _train(plan: SweepPlan, folder: SweepFolder, trial: Trial, path: Path) -> None:
    """Train the run from scratch, or continue it from its last checkpoint."""
    from drivelab.train import train

    config = plan.config(trial)
    run = RunFolder(path)
    if path.is_dir():
        status = run.read_status().get("status")
        if status == "finished":
            return
        if status == "failed":  # deterministic: the same seed fails the same way again
            raise DrivelabError(run.read_status().get("error") or f"{path} failed")
        if list_checkpoints(run.checkpoints) and run.config_path.is_file():
            train(config, runs_root=folder.runs, resume=path, progress=None)
            return
        run.remove()  # killed before its first checkpoint: nothing to keep
    version = int(path.name.rsplit("_v", 1)[1])
    train(config, runs_root=folder.runs, progress=None, version=version)


def _drive(plan: SweepPlan, path: Path) -> dict[str, Any]:
    """Closed loop on the held-out tracks; the result is also kept with the run (its card)."""
    from drivelab.evaluate.drivers import DriverSpec
    from drivelab.evaluate.runner import evaluate
    from drivelab.runs.evals import save_run_eval
    from drivelab.runs.folder import RunFolder
    from drivelab.runs.world import run_env

    options = plan.spec.evaluate
    assert options is not None
    seeds = list(range(options.first_seed, options.first_seed + options.episodes))
    spec = DriverSpec(kind="policy", run=str(path), runs_root=str(path.parent.parent))
    env = run_env(RunFolder.open(path), options.env, flag="evaluate.env")  # another world: one line
    report = evaluate(spec, seeds, env=env, workers=options.workers, max_steps=options.max_steps)
    if not report.complete:
        raise DrivelabError(f"closed-loop evaluation of {path.name} incomplete "
                            f"({report.aggregate['failed']} failed episode(s))")
    save_run_eval(str(path), path.parent.parent, {"env": env, "max_steps": options.max_steps,
                                                  "tracks": seeds, "drivers": [report.to_dict()]})
    return report.aggregate
