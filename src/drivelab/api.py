"""drivelab from Python: ``drivelab.collect / train / evaluate / export / load_policy``.

Each function is the library call its verb makes, with the verb's defaults and checks, so a
notebook gets the same answers (and the same one-line `DrivelabError`s) as the command line
without five deep imports. Heavy modules are imported inside each function: ``import drivelab``
stays light. ``workers=1`` (the default here) runs episodes in this process, so a script
without an ``if __name__ == "__main__"`` guard is never re-executed by a spawned worker.

    import drivelab
    drivelab.collect("data.zarr", episodes=6, val_episodes=1)
    run = drivelab.train("carracing/pilotnet", "data.path=data.zarr", "train.max_batches=200")
    reports = drivelab.evaluate(run, episodes=3, baseline=["expert"])
    policy = drivelab.load_policy(run)   # policy.act(observation) -> {"steering": ..., ...}
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from drivelab.seeds import COLLECTION_SEED, DEFAULT_ENV, HELD_OUT_SEED

if TYPE_CHECKING:
    from drivelab.config import ExperimentConfig
    from drivelab.data.collect import CollectSummary
    from drivelab.evaluate.runner import EvalReport
    from drivelab.evaluate.runtime import PolicyRuntime
    from drivelab.export import ExportResult

__all__ = ["collect", "evaluate", "export", "load_policy", "train"]

Ref = str | Path


def collect(
    path: str | Path,
    episodes: int = 4,
    *,
    env: str = DEFAULT_ENV,
    seed: int = COLLECTION_SEED,
    noise: float = 0.0,
    val_episodes: int = 0,
    test_episodes: int = 0,
    max_steps: int = 1000,
    workers: int = 1,
    append: bool = False,
) -> CollectSummary:
    """Record ``episodes`` expert episodes into a new Zarr dataset at ``path`` (`drivelab collect`)."""
    from drivelab.data.collect import CollectPlan
    from drivelab.data.collect import collect as run_collect

    plan = CollectPlan(env=env, seed=seed, noise=noise, max_steps=max_steps)
    return run_collect(path, plan, episodes=episodes, workers=workers, val_episodes=val_episodes,
                       test_episodes=test_episodes, append=append)


def train(config: str | Path | ExperimentConfig, *overrides: str, runs: str | Path = "runs") -> Path:
    """Train a new run of ``config`` (a YAML path, a shipped name such as ``carracing/pilotnet``,
    or an `ExperimentConfig`) with ``key=value`` overrides; returns the run's folder
    (`drivelab train`; the full `TrainResult` is ``drivelab.train.trainer.train``'s)."""
    from drivelab.config import ExperimentConfig, parse_config
    from drivelab.train.config_source import load_train_config

    if isinstance(config, ExperimentConfig):
        cfg = parse_config(config.model_dump(mode="json"), list(overrides)) if overrides else config
    else:
        cfg = load_train_config(Path(config), list(overrides), None, Path(runs))
    from drivelab.train.trainer import train as run_training

    return run_training(cfg, runs_root=Path(runs)).run.path


def evaluate(
    run: Ref | None,
    episodes: int = 10,
    *,
    seed: int = HELD_OUT_SEED,
    baseline: Sequence[str] = (),
    env: str = DEFAULT_ENV,
    max_steps: int = 1000,
    workers: int = 1,
    runs: str | Path = "runs",
    keep: bool = True,
) -> list[EvalReport]:
    """Drive ``run`` (a run folder, ``<line>_vN[@batch]`` or a ``.onnx`` file) and any
    ``baseline`` (``expert``, ``random``) on held-out tracks; one `EvalReport` per driver
    (``report.aggregate["score_mean"]``...). ``keep`` saves the result with the run, as
    `drivelab eval` does. ``workers=1`` drives in this process."""
    from drivelab.evaluate.job import EvalRequest, drive, keep_drive

    request = EvalRequest(run=None if run is None else str(run), episodes=episodes, seed=seed,
                          workers=workers, baseline=tuple(baseline), env=env, max_steps=max_steps,
                          runs_root=Path(runs))
    outcome = drive(request, _no_progress, lambda _note: None)
    if keep:
        for _ in keep_drive(request, outcome):
            pass
    return outcome.reports


def export(run: Ref, out: str | Path | None = None, *, runs: str | Path = "runs",
           force: bool = False) -> ExportResult:
    """Export ``run`` to one ONNX file checked against the torch runtime (`drivelab export`;
    needs ``pip install 'drivelab[onnx]'``); ``result.path`` is the file."""
    from drivelab.extras import require_extra

    require_extra("onnx", "drivelab.export")
    from drivelab.export import ExportRequest, export_run

    return export_run(ExportRequest(ref=str(run), runs_root=Path(runs),
                                    out=None if out is None else Path(out), force=force))


def load_policy(run: Ref, *, runs: str | Path = "runs", precision: str = "32") -> PolicyRuntime:
    """A trained policy ready to act: ``policy.reset(seed)``, then ``policy.act(observation)``
    returns the actions by name (the runtime `drivelab eval` drives with)."""
    from drivelab.evaluate.runtime import PolicyRuntime

    return PolicyRuntime.from_ref(str(run), runs, precision=precision)


@contextlib.contextmanager
def _no_progress(_total: int, _label: str, unit: str = "") -> Iterator[Callable[[int, int, int], None]]:
    """The evaluation's progress callback, silent: a notebook prints what it wants."""
    yield lambda _frames, _done, _total: None
