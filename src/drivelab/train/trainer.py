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
   new run that fails before its first checkpoint is removed: no version looks valid without one.
"""

from __future__ import annotations

import errno
import fcntl
import os
import random
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning_fabric import Fabric

from drivelab.config import ConfigError, ExperimentConfig, TrainConfig, dump_config, load_config
from drivelab.data.balance import BinnedLabels
from drivelab.data.classes import with_dataset_classes
from drivelab.errors import DrivelabError, Interrupted
from drivelab.models import build_policy
from drivelab.models.heads import StandardizedRegressionHead
from drivelab.models.objectives import Objective
from drivelab.models.transfer import (
    FreezePlan,
    InitReport,
    initialise_from,
    parameter_groups,
    plan_freeze,
    write_init_report,
)
from drivelab.outputs import check_output_dir
from drivelab.processor.pipeline import InputPipeline
from drivelab.processor.state import TargetSteps
from drivelab.runs.checkpoints import (
    CheckpointError,
    list_checkpoints,
    load_trainer_state,
    load_weights,
    restore_rng_state,
    set_aside_checkpoint,
    weights_path,
)
from drivelab.runs.folder import RunError, RunFolder, now_iso, parse_checkpoint_ref
from drivelab.runs.provenance import run_provenance
from drivelab.train.inputs import (
    MaskedBatches,
    TrainInputs,
    make_loader,
    open_inputs,
    val_batches,
    with_history_sizes,
)
from drivelab.train.logs import MetricsLog
from drivelab.train.loop import ProgressSink, TrainLoop
from drivelab.train.optimizers import build_optimizer, build_schedule
from drivelab.train.resume import ResumePoint, resume_point
from drivelab.train.sampling import binned_train_labels, build_train_sampler, training_source
from drivelab.train.speed import SpeedPlan, plan_speed, prepare_policy
from drivelab.train.watch import WatchOptions, WatchPlayer

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


def config_differences(old: Any, new: Any, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two plain (JSON-like) configs."""
    if isinstance(old, dict) and isinstance(new, dict):
        keys = list(old) + [k for k in new if k not in old]
        found: list[str] = []
        for key in keys:
            found += config_differences(old.get(key), new.get(key), f"{prefix}{key}.")
        return found
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        found = []
        for index, (a, b) in enumerate(zip(old, new, strict=True)):
            found += config_differences(a, b, f"{prefix}{index}.")
        return found
    return [] if old == new else [prefix.rstrip(".")]


def check_resume_config(run: RunFolder, config: ExperimentConfig) -> None:
    """Refuse a resume whose resolved config differs from the run's ``config.yaml``."""
    saved = load_config(run.config_path)
    changed = config_differences(saved.model_dump(mode="json"), config.model_dump(mode="json"))
    if changed:
        shown = ", ".join(changed[:8]) + (f" and {len(changed) - 8} more" if len(changed) > 8 else "")
        raise RunError(
            f"cannot resume {run.path}: the config differs from its config.yaml in {shown}; "
            "resume with the run's own config (or no CONFIG), or start a new run"
        )


def load_train_config(
    config: Path | None, overrides: list[str], resume: str | Path | None, runs_root: Path
) -> ExperimentConfig:
    """The config to train: CONFIG + overrides, or (with ``--resume`` and no CONFIG) the run's own.

    ``drivelab train --resume RUN key=value`` puts the override where CONFIG would go; it is
    recognised by its ``=`` and applied to the run's config (the trainer then refuses the
    change like any other).
    """
    extra = list(overrides)
    if config is not None and "=" in str(config) and not Path(config).exists():
        extra.insert(0, str(config))
        config = None
    if config is None:
        if resume is None:
            raise ConfigError("give a CONFIG file (or --resume RUN to continue a run)")
        run_path, _ = parse_checkpoint_ref(str(resume))
        return load_config(RunFolder.open(run_path, runs_root).config_path, extra)
    return load_config(config, extra)


def make_fabric(train: TrainConfig, precision: str | None = None) -> Fabric:
    """Fabric for the configured hardware (``precision``: the resolved one, see `speed`).

    Its complaints become one DrivelabError line.
    """
    try:
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


def set_target_statistics(policy: torch.nn.Module, targets: TargetSteps) -> None:
    """Give every standardised head the training split's action mean/std (kept in its weights)."""
    for name, head in getattr(policy, "heads", {}).items():
        if isinstance(head, StandardizedRegressionHead):
            head.set_target_statistics(targets.mean[name], targets.std[name])


def total_batches(train: TrainConfig, sampler: Any) -> int:
    if train.max_batches is not None:
        return train.max_batches
    assert train.epochs is not None
    return train.epochs * sampler.batches_per_epoch


def train(
    config: ExperimentConfig,
    runs_root: Path = Path("runs"),
    resume: str | Path | None = None,
    progress: ProgressSink | None = None,
    watch: WatchOptions | None = None,
) -> TrainResult:
    """Train a new version of ``config.line`` under ``runs_root``, or continue run ``resume``.

    With ``watch``, rank 0 runs a player process beside the loop that drives the checkpoints
    (`drivelab.train.watch`).
    """
    started = time.perf_counter()
    check_output_dir(runs_root, "--runs")  # a typo'd --runs (a file) fails before any work
    if watch is not None:
        watch.check(config.train)
    inputs = open_inputs(config)
    config = with_history_sizes(config, inputs.history_sizes)
    config = with_dataset_classes(config, inputs.store)  # kind: class heads: count + labels
    resumed: RunFolder | None = None
    resume_at: ResumePoint | None = None
    if resume is not None:
        run_path, at_batch = parse_checkpoint_ref(str(resume))
        resumed = RunFolder.open(run_path, runs_root)
        check_resume_config(resumed, config)
        resume_at = resume_point(resumed, at_batch)
        if resumed.processor_path.is_file():  # continue with the statistics the run started with
            inputs.processor = resumed.read_processor(config)
    # Everything that can refuse runs before any process is launched: one error line, once.
    seed_everything(config.seed)
    policy = build_policy(config.model, config.frame_shape, inputs.history_sizes, config.train.batch_size)
    speed = plan_speed(config.train, policy, resumed.read_status().get("speed") if resumed else None)
    fabric = make_fabric(config.train, speed.precision)
    if fabric.is_global_zero and speed.fallback:  # said at once, not after the run
        for note in speed.notes:
            print(f"note: {note}", file=sys.stderr)
    binned = binned_train_labels(config, inputs.train) if config.data.balance.scheme != "none" else None
    probe = build_train_sampler(config, inputs.train, 0, fabric.world_size, binned=binned)
    if config.train.bptt.mode != "none":  # sequences for a recurrent policy: checked here
        from drivelab.train.sequence_loop import sequence_probe

        probe = sequence_probe(config, inputs, fabric.world_size)
    total = total_batches(config.train, probe)
    set_target_statistics(policy, inputs.processor.targets)
    # Transfer learning and freezing are checked here too; sources are read for new runs only
    # (a resume takes every weight from its checkpoint).
    init_report = initialise_from(config.model, policy, runs_root) if resumed is None else None
    freeze = plan_freeze(config.model, policy, probe.batches_per_epoch, config.train.lr)
    if freeze is not None:
        freeze.check(total, fabric.world_size)
        freeze.apply(policy, 0)
    with ExitStack() as stack:
        state: dict[str, Any] | None = None
        if resumed is not None:
            if fabric.is_global_zero:
                stack.enter_context(run_lock(resumed))
            assert resume_at is not None
            state = _load_resume_state(resumed, resume_at, policy, fabric, total)
        launch(fabric, config.train)
        if fabric.device.type == "cuda":
            # Bit-identical resumes need deterministic convolution kernels.
            torch.backends.cudnn.deterministic = True
            torch.backends.cudnn.benchmark = False
        optimizer = build_optimizer(
            config.train, parameter_groups(policy, freeze) if freeze else policy.parameters()
        )
        model, optimizer = fabric.setup(prepare_policy(policy, speed), optimizer)
        if state is not None:
            optimizer.load_state_dict(state["optimizer"])
            fabric.strategy.precision.load_state_dict(state.get("precision", {}))
        run = resumed if resumed is not None else _claim_run(fabric, runs_root, config.line)
        if resumed is None and fabric.is_global_zero:
            stack.enter_context(run_lock(run))
            if init_report is not None:
                write_init_report(run, init_report)
        result = _train_period(
            fabric, config, inputs, policy, model, optimizer, run, total, state, progress, started,
            fresh=resumed is None, watch=watch, freeze=freeze, binned=binned, speed=speed,
        )
    result.init_report = init_report
    result.speed = speed
    return result


def _load_resume_state(
    run: RunFolder, point: ResumePoint, policy: torch.nn.Module, fabric: Fabric, total: int
) -> dict[str, Any]:
    batch = point.batch
    if point.damaged_after and fabric.is_global_zero:
        for damaged in point.damaged_after:  # kept for inspection, no longer a checkpoint
            set_aside_checkpoint(run.checkpoints, damaged)
    state = load_trainer_state(run.checkpoints, batch)
    if state.get("world_size") != fabric.world_size:
        raise RunError(
            f"{run.path} was trained on {state.get('world_size')} process(es), this resume has "
            f"{fabric.world_size}: resume with the same train.devices"
        )
    if state["batch"] >= total:
        raise RunError(
            f"{run.path} is already trained to batch {state['batch']} of {total}: nothing to resume"
        )
    try:
        policy.load_state_dict(load_weights(weights_path(run.checkpoints, batch)))
    except RuntimeError as exc:
        raise CheckpointError(
            f"{weights_path(run.checkpoints, batch)} does not fit the configured policy "
            f"({str(exc).splitlines()[0][:120]})"
        ) from None
    return state


def _claim_run(fabric: Fabric, root: Path, line: str) -> RunFolder:
    """Rank 0 creates the next version of the line; every rank learns its path."""
    path = str(RunFolder.create(root, line).path) if fabric.is_global_zero else None
    return RunFolder(Path(fabric.broadcast(path, src=0)))


def _train_period(
    fabric: Fabric,
    config: ExperimentConfig,
    inputs: TrainInputs,
    policy: torch.nn.Module,
    model: Any,
    optimizer: Any,
    run: RunFolder,
    total: int,
    state: dict[str, Any] | None,
    progress: ProgressSink | None,
    started: float,
    fresh: bool,
    watch: WatchOptions | None = None,
    freeze: FreezePlan | None = None,
    binned: BinnedLabels | None = None,
    speed: SpeedPlan | None = None,
) -> TrainResult:
    """Open a period in the run, train it, and record how it ended (rank 0 writes)."""
    rank, world = fabric.global_rank, fabric.world_size
    done = int(state["batch"]) if state is not None else 0
    period = 0
    player: WatchPlayer | None = None
    watch_env = (watch.env or inputs.store.meta.env_id) if watch is not None else ""
    if fabric.is_global_zero:
        if fresh:
            run.config_path.write_text(dump_config(config), encoding="utf-8")
            run.write_processor(inputs.processor)
            run.write_status(
                "training", line=run.line, version=run.version, created=now_iso(), data=inputs.describe(),
                provenance=run_provenance(config, inputs.store),
                **({"speed": speed.describe()} if speed is not None else {}),
            )
        else:
            run.remove_partial_files()
            run.write_status("training")
        watched = {"watched": True, "watch": watch.describe(watch_env)} if watch is not None else {}
        if speed is not None:
            watched["speed"] = speed.describe()
        period = run.start_period(
            done, world_size=world, device=str(fabric.device), resumed_from=done if state else None,
            **watched,
        )
        if watch is not None:
            player = WatchPlayer(run, watch, watch_env, period, after=done, last=total)
    log: MetricsLog | None = None
    sink = progress if fabric.is_global_zero else None
    try:
        sampler = build_train_sampler(config, inputs.train, rank, world, state, binned)
        train_data, train_batches = training_source(config, inputs, sampler, done)
        pin = fabric.device.type == "cuda"
        workers = config.data.workers
        val_loader = None
        if inputs.val is not None:
            batches = val_batches(len(inputs.val), config.train.batch_size, rank, world)
            val_loader = make_loader(MaskedBatches(inputs.val), batches, workers, pin, config.seed)
        if fabric.is_global_zero:
            log = MetricsLog(run.metrics_path, run.tb, period, done)
        history = config.model.history
        loop = TrainLoop(
            fabric=fabric,
            config=config,
            policy=policy,
            model=model,
            optimizer=optimizer,
            objective=Objective(
                config.model.heads, history.aux_weight if history else 0.0,
                inputs.processor.targets.scales(),
            ),
            pipeline=InputPipeline(inputs.processor, channels_last=speed is not None and speed.channels_last),
            schedule=build_schedule(config.train, total),
            sampler=sampler,
            train_loader=make_loader(train_data, train_batches, workers, pin, config.seed),
            val_loader=val_loader,
            run=run,
            total_batches=total,
            batches_done=done,
            period=period,
            log=log,
            progress=sink,
            last_checkpoint=done if state else None,
            freeze=freeze,
        )
        if config.train.bptt.mode != "none":  # train.bptt: sequence batches, carried state
            from drivelab.train.sequence_loop import SequenceLoop

            loop = SequenceLoop.from_frame_loop(loop, inputs, state)
        if state is not None:
            restore_rng_state(state["rng"][rank])
        else:
            seed_everything(config.seed + rank)  # dropout etc.: reproducible, different per rank
        loop.run_period()
    except BaseException as exc:
        if player is not None:
            _end_watch_after_failure(player, run, period, exc)
        if fabric.is_global_zero:
            _record_failure(run, period, fresh, exc)
        no_space = _no_space(exc)
        if no_space is not None:
            raise _disk_full(run, no_space) from None
        if isinstance(exc, KeyboardInterrupt):
            raise _interrupted(run, fresh) from None
        raise
    finally:
        if log is not None:
            log.close()
        if sink is not None:
            sink.close()
    if fabric.is_global_zero:
        run.update_period(
            period, ended=now_iso(), status="finished", last_batch=loop.batches_done, ranks=loop.ranks
        )
        run.write_status("finished", last_checkpoint=loop.last_checkpoint)
    watch_record: dict[str, Any] | None = None
    watch_note: str | None = None
    if player is not None:
        # The period is recorded finished first: a Ctrl-C during this wait loses no training.
        outcome = player.finish()
        watch_record = player.record(outcome)
        run.update_period(period, watch=watch_record)
        watch_note = outcome.line(run)
    return TrainResult(
        run=run,
        batches=loop.batches_done,
        first_batch=done,
        last_checkpoint=loop.last_checkpoint,
        seconds=time.perf_counter() - started,
        train_values=loop.last_values,
        val_values=loop.last_val,
        world_size=world,
        is_global_zero=fabric.is_global_zero,
        watch=watch_record,
        watch_note=watch_note,
    )


def _end_watch_after_failure(player: WatchPlayer, run: RunFolder, period: int, exc: BaseException) -> None:
    """Stop the player before the failure is recorded (which may delete the run folder).

    A failed period's checkpoints are still worth watching, so the player finishes them; an
    interrupted one (Ctrl-C) is stopped at once. Nothing here may hide the original failure.
    """
    try:
        keep = isinstance(exc, Exception) and bool(list_checkpoints(run.checkpoints))
        outcome = player.finish() if keep else player.stop()
        if list_checkpoints(run.checkpoints):
            run.update_period(period, watch=player.record(outcome))
    except BaseException:  # a second Ctrl-C while waiting: stop it, report the first failure
        player.stop()


def _no_space(exc: BaseException) -> OSError | None:
    """The ENOSPC (or quota) error behind ``exc``, wherever the write failed (log, checkpoint)."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno in (errno.ENOSPC, errno.EDQUOT):
            return seen
        seen = seen.__cause__ or seen.__context__
    if isinstance(exc, DrivelabError) and "No space left" in str(exc):
        return OSError(errno.ENOSPC, "No space left on device")
    return None


def _interrupted(run: RunFolder, fresh: bool) -> Interrupted:
    """Ctrl-C: say which checkpoint survived and how to go on from it."""
    kept = list_checkpoints(run.checkpoints)
    if not kept:
        return Interrupted("before the first checkpoint: the new run was removed" if fresh else
                           f"no checkpoint of {run.path} was written in this period")
    return Interrupted(f"checkpoint at batch {kept[-1]} kept in {run.path}; resume with "
                       f"`drivelab train --resume {run.path}`")


def _disk_full(run: RunFolder, exc: OSError) -> DrivelabError:
    """One line for a full disk: what is kept and how to continue once there is room."""
    kept = list_checkpoints(run.checkpoints)
    if not kept:
        return DrivelabError(
            f"no space left on the device while training ({exc.strerror}); nothing was kept "
            f"(the run had no checkpoint yet): free space and train again"
        )
    return DrivelabError(
        f"no space left on the device while training {run.path}: stopped, checkpoint batch "
        f"{kept[-1]} is kept; free space and continue with `drivelab train --resume {run.path}`"
    )


def _record_failure(run: RunFolder, period: int, fresh: bool, exc: BaseException) -> None:
    """Leave no run looking valid: remove a new one without checkpoints, else mark it.

    On a full disk the bookkeeping itself may not fit: the run then keeps its last status, which
    a resume corrects, and the original failure is what the user sees.
    """
    with suppress(OSError):
        _mark_failure(run, period, fresh, exc)


def _mark_failure(run: RunFolder, period: int, fresh: bool, exc: BaseException) -> None:
    checkpoints = list_checkpoints(run.checkpoints)
    if fresh and not checkpoints:
        run.remove()
        return
    interrupted = isinstance(exc, KeyboardInterrupt)
    status = "interrupted" if interrupted else "failed"
    reason = "interrupted" if interrupted else (str(exc).splitlines() or [type(exc).__name__])[0]
    run.update_period(period, ended=now_iso(), status=status)
    run.write_status(status, error=reason, last_checkpoint=checkpoints[-1] if checkpoints else None)
