"""A sweep from start to results: plan and check, make or reopen its folder, run, tabulate."""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from pathlib import Path

from drivelab.errors import Interrupted
from drivelab.sweep.folder import SweepFolder
from drivelab.sweep.spec import SweepPlan, parse_spec, plan_sweep, read_spec


def new_sweep(spec_path: Path, overrides: list[str], out: Path | None) -> tuple[SweepPlan, SweepFolder]:
    """Check the spec and every trial's config, then claim the sweep folder (nothing before)."""
    plan, claim = plan_new_sweep(spec_path, overrides, out)
    return plan, claim()


def plan_new_sweep(
    spec_path: Path, overrides: list[str], out: Path | None
) -> tuple[SweepPlan, Callable[[], SweepFolder]]:
    """Check the spec, every trial's config and the folder; the folder is made only by the
    returned ``claim()``, so the caller can first make sure Ray is reachable (a sweep that
    cannot run leaves no folder behind)."""
    spec, raw = read_spec(spec_path)
    plan = plan_sweep(spec, overrides)
    path = out or Path("sweeps") / spec.name
    SweepFolder.check_new(path)
    return plan, functools.partial(SweepFolder.create, path, raw, overrides)


def reopen_sweep(path: Path) -> tuple[SweepPlan, SweepFolder]:
    """The plan a sweep folder was started with (its stored spec and overrides)."""
    folder = SweepFolder.open(path)
    raw, overrides = folder.read_spec()
    spec, _ = parse_spec(raw, folder.path, str(folder.spec_path))
    return plan_sweep(spec, overrides), folder


def run_sweep(
    plan: SweepPlan,
    folder: SweepFolder,
    address: str | None = None,
    resume: bool = False,
    on_change: Callable[[], None] | None = None,
) -> list[Path]:
    """Run what is left, then write the results (also when interrupted: what finished so far).

    The sweep folder's lock is held throughout (`SweepFolder.driving`), fresh run or resume.

    ``on_change`` is called every second while trials run (the progress line): a poll of the
    ledger, because Tune pickles its callbacks with the experiment state.
    """
    from drivelab.sweep.engine import run_tune
    from drivelab.sweep.results import write_results

    stop = threading.Event()
    poller = threading.Thread(target=_poll, args=(on_change, stop), daemon=True)
    with folder.driving():  # before Ray: a second driver is refused, not launched
        if on_change is not None:
            poller.start()
        try:
            run_tune(plan, folder, address=address, resume=resume)
        except (Interrupted, KeyboardInterrupt):
            write_results(plan, folder)
            raise
        finally:
            stop.set()
        return write_results(plan, folder)


def _poll(on_change: Callable[[], None] | None, stop: threading.Event) -> None:
    while on_change is not None and not stop.wait(1.0):
        on_change()
