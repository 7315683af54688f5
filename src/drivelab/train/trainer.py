"""`train`: one training period of a run, from a config (new run) or a run folder (resume).

The order matters for the promises the trainer makes:

1. everything checkable is checked before a run folder exists or a process is launched
   (config, dataset, splits, history signals, frame sizes, building the policy, a resume whose
   config changed), so a bad invocation costs one error line and leaves nothing;
2. processes are launched (one, or one per device under DDP; torchrun works too), and rank 0
   alone claims the run folder and tells the others where it is;
3. the policy is built from the seed, or its weights, optimizer, RNG states and data position
   come from the latest checkpoint, so N + resume + N batches equals 2N batches bit for bit;
4. a period that fails leaves the run marked ``failed`` with the reason (checkpoints kept), and a
   new run that fails before its first checkpoint is removed: no version looks valid without one
   (`drivelab.train.failures`).

The period itself is a list of factory calls (`drivelab.train.period`) and the loop they build
(`drivelab.train.loop`).
"""

from __future__ import annotations

import fcntl
import logging
import os
import random
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning_fabric import Fabric

from drivelab.config import ExperimentConfig, TrainConfig
from drivelab.data.loader import DecodedEpisodes
from drivelab.data.splits import open_splits
from drivelab.errors import DrivelabError
from drivelab.models import build_policy
from drivelab.models.freezing import FreezePlan, parameter_groups, plan_freeze
from drivelab.models.heads import set_target_statistics
from drivelab.models.transfer import InitReport, initialise_from, write_init_report
from drivelab.order.base import BatchOrder
from drivelab.order.build import check_order, total_batches
from drivelab.outputs import check_output_dir
from drivelab.processor.state import ProcessorState
from drivelab.runs.checkpoints import restore_rng_state
from drivelab.runs.folder import RunError, RunFolder, parse_checkpoint_ref
from drivelab.runs.world import recorded_env
from drivelab.train.failures import period_failed
from drivelab.train.inputs import CheckedData, TrainInputs, check_data
from drivelab.train.logs import MetricsLog
from drivelab.train.loop import LoopRecords, ProgressSink, TrainLoop
from drivelab.train.optimizers import build_optimizer
from drivelab.train.period import (
    PeriodSetup,
    batch_order,
    finish_period,
    loop_parts,
    open_period,
    step_kind,
    training_loader,
    validation,
)
from drivelab.train.resume import ResumePoint, check_resume_config, load_resume_state, resume_point
from drivelab.train.speed import SpeedPlan, plan_speed, prepare_policy
from drivelab.watch.spec import WatchOptions

LOCK_NAME = ".train.lock"


@dataclass
class TrainResult:
    """What a finished training period produced."""

    run: RunFolder
    batches: int
    first_batch: int
    last_checkpoint: int | None
    seconds: float
    train_values: dict[str, float] = field(default_factory=dict)
    val_values: dict[str, float] = field(default_factory=dict)
    world_size: int = 1
    is_global_zero: bool = True
    watch: dict[str, Any] | None = None  # what the watch player did (rank 0, --watch-every)
    watch_note: str | None = None  # one line when the player failed or missed checkpoints
    init_report: InitReport | None = None  # what model.init_from copied (new runs)
    speed: SpeedPlan | None = None  # the precision / memory format / compile this period ran


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (all devices): the model's initialisation depends on it."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def make_fabric(train: TrainConfig, precision: str | None = None) -> Fabric:
    """Fabric for the configured hardware (``precision``: the resolved one, see `speed`).

    Its complaints become one DrivelabError line.
    """
    try:
        with _without_fabric_info():
            return Fabric(
                accelerator=train.accelerator,
                strategy=train.strategy,
                devices=train.devices,
                precision=precision or train.precision,  # type: ignore[arg-type]
            )
    except (ValueError, RuntimeError, TypeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DrivelabError(
            f"train.accelerator/devices/strategy/precision ({train.accelerator}, {train.devices}, "
            f"{train.strategy}, {train.precision}) cannot run here: {first}"
        ) from None


@contextmanager
def _without_fabric_info() -> Iterator[None]:
    """Mute Fabric's info lines ("Using bfloat16 Automatic Mixed Precision") while it is built.

    The precision is drivelab's decision (`speed.plan_speed`): it is recorded in run.json and the
    card, and said in a ``note:`` line only when it differs from the request, so stderr stays
    free for the one line a refusal prints. Fabric's warnings still come through.
    """
    logger = logging.getLogger("lightning_fabric.utilities.rank_zero")
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)


def launch(fabric: Fabric, train: TrainConfig) -> None:
    """Start the processes (a no-op for one device or under torchrun), checking the launcher."""
    try:
        fabric.launch()
    except ValueError as exc:  # e.g. torchrun's process count disagrees with train.devices
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DrivelabError(f"train.devices={train.devices} does not match the launcher: {first}") from None


@contextmanager
def run_lock(run: RunFolder) -> Iterator[None]:
    """One trainer per run: a second `--resume` of a run in training fails at once."""
    fd = os.open(run.path / LOCK_NAME, os.O_CREAT | os.O_RDWR, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunError(f"{run.path} is being trained by another process right now") from None
        yield
    finally:
        os.close(fd)


@dataclass
class TrainingPlan:
    """What `train` checked before any process is launched: the policy and how to train it."""

    config: ExperimentConfig
    inputs: TrainInputs
    policy: torch.nn.Module
    speed: SpeedPlan
    fabric: Fabric
    total: int
    freeze: FreezePlan | None
    init_report: InitReport | None
    resume_at: ResumePoint | None = None  # the checkpoint a resume continues from


def train(
    config: ExperimentConfig,
    runs_root: Path = Path("runs"),
    resume: str | Path | None = None,
    progress: ProgressSink | None = None,
    watch: WatchOptions | None = None,
    version: int | None = None,
    decoded: DecodedEpisodes | None = None,
) -> TrainResult:
    """Train a new version of ``config.line`` under ``runs_root``, or continue run ``resume``.

    With ``watch``, rank 0 runs a player process beside the loop that drives the checkpoints
    (`drivelab.watch`). ``version`` names the new run's version instead of taking the next
    free one (sweep trials, `drivelab.sweep.trial`). ``decoded`` keeps decoded episodes from
    one period to the next in the same process (the live trainer's periods over a growing dataset).
    """
    started = time.perf_counter()
    check_output_dir(runs_root, "--runs")  # a typo'd --runs (a file) fails before any work
    resumed, at_batch = _resumed_run(resume, runs_root)
    trained = (recorded_env(resumed), resumed.name) if resumed is not None else None
    # data of another world than the config's (or the resumed run's): refused first
    data = check_data(config, trained)
    config = data.config  # completed: history sizes, class counts (checked against the data)
    plan = _plan(config, data, resumed, at_batch, runs_root, watch, decoded)
    with ExitStack() as stack:
        setup = _launch(plan, stack, runs_root, resumed, version)
        result = _train_period(setup, progress, started, watch)
    result.init_report = plan.init_report
    result.speed = plan.speed
    return result


def _resumed_run(resume: str | Path | None, runs_root: Path) -> tuple[RunFolder | None, int | None]:
    """The run ``--resume RUN[@BATCH]`` names, opened (not yet checked), and its batch."""
    if resume is None:
        return None, None
    run_path, at_batch = parse_checkpoint_ref(str(resume))
    return RunFolder.open(run_path, runs_root), at_batch


def _plan(
    config: ExperimentConfig, data: CheckedData, resumed: RunFolder | None, at_batch: int | None,
    runs_root: Path, watch: WatchOptions | None = None, decoded: DecodedEpisodes | None = None,
) -> TrainingPlan:
    """Everything that can refuse, before any process is launched: one error line, once.

    The steps go from the trainer's own down to the data's: a resume's config and checkpoint,
    the speed plan, the watch cadence, the policy (its kind, transfer), the batch order and
    freezing, then the splits are opened (damaged episodes, a RAM cache that does not fit).
    """
    resume_at: ResumePoint | None = None
    if resumed is not None:
        check_resume_config(resumed, config)
        resume_at = resume_point(resumed, at_batch)
        if resumed.processor_path.is_file():  # continue with the statistics the run started with
            data.processor = ProcessorState.from_json(
                resumed.processor_path.read_text(), str(resumed.processor_path)
            )
    seed_everything(config.seed)
    policy = build_policy(config.model, config.frame_shape, data.history_sizes, config.train.batch_size)
    speed = plan_speed(config.train, policy, resumed.read_status().get("speed") if resumed else None,
                       config.data.input_size)
    fabric = make_fabric(config.train, speed.precision)
    if fabric.is_global_zero and speed.fallback:  # said at once, not after the run
        for note in speed.notes:
            print(f"note: {note}", file=sys.stderr)
    if watch is not None:  # the player drives checkpoints: its cadence must be theirs
        watch.check(config.train)
    probe: BatchOrder = check_order(config, data.facts, fabric.world_size)  # a window must fill too
    total = total_batches(config.train, probe)
    set_target_statistics(policy, data.processor.targets.mean, data.processor.targets.std)
    # Transfer learning is checked here too; sources are read for new runs only (a resume takes
    # every weight from its checkpoint).
    init_report = initialise_from(config.model, policy, runs_root) if resumed is None else None
    freeze = plan_freeze(config.model, policy, probe.batches_per_epoch, config.train.lr)
    if freeze is not None:
        freeze.check(total, fabric.world_size)
        freeze.apply(policy, 0)
    inputs = TrainInputs(config, data.facts, data.store, data.processor,
                         *open_splits(data.store, data.facts, data.processor, config, decoded))
    return TrainingPlan(config, inputs, policy, speed, fabric, total, freeze, init_report, resume_at)


def _launch(
    plan: TrainingPlan, stack: ExitStack, runs_root: Path, resumed: RunFolder | None, version: int | None = None,
) -> PeriodSetup:
    """Lock and read the resumed run, launch the processes, set the model and optimizer up."""
    fabric, config, policy, freeze = plan.fabric, plan.config, plan.policy, plan.freeze
    state: dict[str, Any] | None = None
    if resumed is not None:
        if fabric.is_global_zero:
            stack.enter_context(run_lock(resumed))
        assert plan.resume_at is not None
        state = load_resume_state(
            resumed, plan.resume_at, policy, fabric.world_size, plan.total, set_aside=fabric.is_global_zero
        )
    launch(fabric, config.train)
    if fabric.device.type == "cuda":
        # Bit-identical resumes need deterministic convolution kernels.
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
    optimizer = build_optimizer(
        config.train, parameter_groups(policy, freeze) if freeze else policy.parameters()
    )
    model, optimizer = fabric.setup(prepare_policy(policy, plan.speed), optimizer)
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
        fabric.strategy.precision.load_state_dict(state.get("precision", {}))
    run = resumed if resumed is not None else _claim_run(fabric, runs_root, config.line, version)
    if resumed is None and fabric.is_global_zero:
        stack.enter_context(run_lock(run))
        if plan.init_report is not None:
            write_init_report(run, plan.init_report)
    return PeriodSetup(
        fabric, config, plan.inputs, policy, model, optimizer, run, plan.total, state,
        fresh=resumed is None, freeze=freeze, speed=plan.speed,
    )


def _claim_run(fabric: Fabric, root: Path, line: str, version: int | None) -> RunFolder:
    """Rank 0 creates the next version of the line (or ``version``); every rank learns its path."""
    path = str(RunFolder.create(root, line, version).path) if fabric.is_global_zero else None
    return RunFolder(Path(fabric.broadcast(path, src=0)))


def _train_period(
    setup: PeriodSetup, progress: ProgressSink | None, started: float, watch: WatchOptions | None
) -> TrainResult:
    """Open a period in the run, train it, and record how it ended (rank 0 writes)."""
    fabric, run, done = setup.fabric, setup.run, setup.batches_done
    period, player = open_period(setup, watch)
    log: MetricsLog | None = None
    sink = progress if fabric.is_global_zero else None
    try:
        order = batch_order(setup)
        loader = training_loader(setup, order)
        val = validation(setup)
        if fabric.is_global_zero:
            log = MetricsLog(run.metrics_path, run.tb, period, done)
        parts = loop_parts(setup, order, loader)
        loop = TrainLoop(
            parts, step_kind(setup, parts), val, LoopRecords(run, period, log, sink),
            total_batches=setup.total, batches_done=done,
            last_checkpoint=done if setup.state else None,
        )
        if setup.state is not None:
            restore_rng_state(setup.state["rng"][fabric.global_rank])
        else:
            seed_everything(setup.config.seed + fabric.global_rank)  # dropout etc.: per rank
        loop.run_period()
    except BaseException as exc:
        failure = period_failed(exc, run, period, setup.fresh, player, record=fabric.is_global_zero)
        if failure is not None:
            raise failure from None
        raise
    finally:
        if log is not None:
            log.close()
        if sink is not None:
            sink.close()
    watch_record, watch_note = finish_period(setup, loop, period, player)
    return TrainResult(
        run=run,
        batches=loop.batches_done,
        first_batch=done,
        last_checkpoint=loop.last_checkpoint,
        seconds=time.perf_counter() - started,
        train_values=loop.last_values,
        val_values=loop.last_val,
        world_size=fabric.world_size,
        is_global_zero=fabric.is_global_zero,
        watch=watch_record,
        watch_note=watch_note,
    )
