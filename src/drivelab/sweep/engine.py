"""Ray Tune runs the trials: locally on this machine's cores, or on a cluster with ``--address``.

Why Tune and not a process pool: the same sweep goes from a laptop to a cluster by adding
``--address``; Tune schedules trials by their resources (fractional GPUs included), caps the
concurrency, and keeps an experiment state that `Tuner.restore` continues after a Ctrl-C or a
dead driver. drivelab adds what Tune does not know: a trial is a run folder that resumes from
its own checkpoint, and the ledger (`sweep.folder`) says which trials are final.

Tune's experiment state is pickles, and unpickling runs code: `Tuner.restore` is only called on
state whose sha256 drivelab recorded under this user's key (`sweep.trust`), and never before
that check. A driver killed before its last record leaves state nobody can vouch for; it is
dropped and Tune starts afresh on what the ledger says is open.

The plan (every trial's config) goes to the object store once (`tune.with_parameters`), never
by value per trial. On a cluster, the sweep folder and the dataset must be on storage every
node sees at the same path (NFS, a shared volume): trials write their run folders there.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shlex
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from drivelab.errors import Interrupted
from drivelab.sweep.folder import FINAL, SweepFolder
from drivelab.sweep.loopback import LOOPBACK, check_loopback, check_reachable, single_machine_ray
from drivelab.sweep.ray_leftovers import reap_dead_sessions, record_local_session
from drivelab.sweep.resources import ray_system_config, worker_env
from drivelab.sweep.spec import SweepError, SweepPlan
from drivelab.sweep.trust import check_restorable
from drivelab.sweep.trust import record as record_state

TUNE_NAME = "tune"
#: The local object store holds the plan and Tune's small results: 80 MiB is plenty.
LOCAL_OBJECT_STORE = 80 * 1024 * 1024


def _trainable(config: dict[str, Any], plan: SweepPlan, folder: str) -> None:
    """Tune's function trainable: one trial, reported once (curves live in the run folder)."""
    from ray import tune

    from drivelab.sweep.trial import run_trial

    record = run_trial(plan, SweepFolder(Path(folder)), config["trial"])
    numbers = {k: v for k, v in (record.get("result") or {}).items() if isinstance(v, int | float)}
    tune.report({"status": record["status"], **numbers})


def start_ray(
    address: str | None,
    cpus: float,
    num_cpus: int | None = None,
    object_store: int = LOCAL_OBJECT_STORE,
) -> bool:
    """Connect to ``address`` or start Ray here; False when a Ray session was already up (tests).

    A local Ray gets ``num_cpus`` (default: every core), workers at the normal priority, and
    listens on 127.0.0.1 only (`sweep.loopback`): reaching it from the network is reaching a
    code-execution service. Leftovers of an earlier local Ray whose driver was killed are reaped
    first (`sweep.ray_leftovers`). A cluster is only ever the user's explicit ``address``, which
    is checked to answer before Ray is asked (Ray itself retries an unreachable one for minutes).
    """
    import ray

    if ray.is_initialized():
        return False
    if address is not None and address.strip().lower() == "local":
        address = None  # Ray's word for "start one here": the same local Ray, on loopback
    if address is not None:
        check_reachable(address)  # before Ray, which retries an unreachable address for minutes
    options: dict[str, Any] = {
        "runtime_env": {"env_vars": worker_env(cpus)},
        "include_dashboard": False,
        "log_to_driver": False,
        "logging_level": logging.ERROR,
    }
    where = "a local Ray" if address is None else f"the Ray cluster at {address[:80]}"
    try:
        if address is not None:
            ray.init(address=address, **options)
        else:
            reap_dead_sessions()
            with single_machine_ray():
                context = ray.init(
                    num_cpus=num_cpus or os.cpu_count() or 1,
                    object_store_memory=object_store,
                    _system_config=ray_system_config(),
                    _node_ip_address=LOOPBACK,
                    **options,
                )
            record_local_session(context.address_info["session_dir"])
            check_loopback(context.address_info["node_ip_address"])
    except (ConnectionError, RuntimeError, ValueError) as exc:
        if ray.is_initialized():
            ray.shutdown()
        if isinstance(exc, SweepError):
            raise
        raise SweepError(f"cannot start {where}: {str(exc).splitlines()[0][:300] if str(exc) else exc}") from None
    return True


@contextlib.contextmanager
def ray_session(address: str | None, cpus: float) -> Iterator[None]:
    """`start_ray` for a block, shut down after it (unless a Ray session was already up)."""
    import ray

    started = start_ray(address, cpus)
    try:
        yield
    finally:
        if started:
            ray.shutdown()


def run_tune(
    plan: SweepPlan,
    folder: SweepFolder,
    address: str | None = None,
    resume: bool = False,
) -> None:
    """Run every trial that is not final; raises `Interrupted` if the sweep was stopped."""
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # Tune's own tables would bury our line
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")  # curves are in the runs
    from ray import tune

    spec = plan.spec
    root = folder.path.resolve()  # Tune takes a relative path for a URI without a scheme
    experiment = root / folder.tune.name / TUNE_NAME
    # Tune's state is pickles: checked against drivelab's record before Ray starts (`sweep.trust`)
    restore = resume and check_restorable(root, experiment)
    started = start_ray(address, spec.trial.cpus)
    try:
        trainable = tune.with_resources(
            tune.with_parameters(_trainable, plan=plan, folder=str(root)),
            {"cpu": spec.trial.cpus, "gpu": spec.trial.gpus},
        )
        if restore:
            tuner = tune.Tuner.restore(
                str(experiment), trainable, resume_unfinished=True, resume_errored=True,
                param_space=_param_space(plan, folder),
            )
        else:
            tuner = tune.Tuner(
                trainable,
                param_space=_param_space(plan, folder),
                tune_config=tune.TuneConfig(max_concurrent_trials=spec.max_concurrent),
                run_config=tune.RunConfig(
                    name=TUNE_NAME, storage_path=str(experiment.parent), verbose=0,
                ),
            )
        record_state(root, experiment, closed=False)  # tuner.pkl exists now; a kill -9 may follow
        try:
            tuner.fit()
        except BaseException:
            record_state(root, experiment, closed=False)  # Tune's last upload may be unfinished
            raise
        record_state(root, experiment, closed=True)
    finally:
        if started:
            import ray

            ray.shutdown()
    open_trials = [t.name for t in plan.trials if (folder.read_trial(t.name) or {}).get("status") not in FINAL]
    if open_trials:
        raise Interrupted(f"{len(open_trials)} trial(s) not finished; finished ones are kept: "
                          f"continue with `drivelab sweep --resume {shlex.quote(str(root))}`")


def _param_space(plan: SweepPlan, folder: SweepFolder) -> dict[str, Any]:
    """The trials left to run (a resume without Tune's state skips the final ones itself)."""
    from ray import tune

    names = [t.name for t in plan.trials if (folder.read_trial(t.name) or {}).get("status") not in FINAL]
    return {"trial": tune.grid_search(names or [plan.trials[0].name])}
