"""One training period, piece by piece: the factories `drivelab.train.trainer` calls in order.

`train` checks, launches and restores (`PeriodSetup`); each function here builds one piece of
the period from it — the run records it opens, the batch order, the loaders, the step kind and
validation for the kind of training, the loop's parts — exactly once: what a period builds, it
uses. The kind is decided here and nowhere else: ``train.bptt`` sequences for a recurrent
policy, the batch order's helper outputs (v2 balancing) for helper models, else frame batches.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
from lightning_fabric import Fabric

from drivelab.config import ExperimentConfig
from drivelab.data.batch_loader import make_loader
from drivelab.models.freezing import FreezePlan
from drivelab.models.kinds import kind_of
from drivelab.models.objectives import Objective
from drivelab.order.base import BatchOrder
from drivelab.order.build import build_order
from drivelab.order.sequences import check_sequence_data
from drivelab.order.validation import MaskedBatches, val_batches
from drivelab.processor.pipeline import InputPipeline
from drivelab.runs.folder import RunFolder, now_iso
from drivelab.runs.provenance import run_provenance
from drivelab.seeds import DEFAULT_ENV
from drivelab.train.helper_models import HelperStep
from drivelab.train.inputs import TrainInputs
from drivelab.train.loop import TrainLoop
from drivelab.train.optimizers import build_schedule
from drivelab.train.sequence_batches import SequenceBatches, sequence_inputs
from drivelab.train.sequence_steps import SequenceStep, SequenceValidation
from drivelab.train.speed import SpeedPlan
from drivelab.train.steps import FrameStep, FrameValidation, LoopParts, StepKind, Validation
from drivelab.watch.launcher import WatchPlayer
from drivelab.watch.spec import WatchOptions


@dataclass
class PeriodSetup:
    """What `train` prepared for a period: checked, launched, and restored from a checkpoint."""

    fabric: Fabric
    config: ExperimentConfig
    inputs: TrainInputs
    policy: torch.nn.Module  # the plain module
    model: Any  # the Fabric-wrapped module
    optimizer: Any  # Fabric-wrapped, its state restored on a resume
    run: RunFolder
    total: int  # the batch the run trains to
    state: dict[str, Any] | None  # the trainer state resumed from (None: a new run)
    fresh: bool  # a new run (removed again if it fails before its first checkpoint)
    freeze: FreezePlan | None = None
    speed: SpeedPlan | None = None

    @property
    def batches_done(self) -> int:
        return int(self.state["batch"]) if self.state is not None else 0

    @property
    def sequences(self) -> bool:
        """The policy's kind trains on sequences (``train.bptt``), not batches of frames."""
        return kind_of(self.config.model).step_kind == "sequences"


def open_period(setup: PeriodSetup, watch: WatchOptions | None) -> tuple[int, WatchPlayer | None]:
    """Rank 0 records the period's start (a new run: its config and status first).

    Returns the period's number and, with ``watch``, the player beside it (rank 0 only).
    """
    fabric, run, done = setup.fabric, setup.run, setup.batches_done
    if not fabric.is_global_zero:
        return 0, None
    speed = {"speed": setup.speed.describe()} if setup.speed is not None else {}
    # the player drives in the dataset's world (options included) unless watch.env names one
    watch_env = (watch.env or setup.inputs.store.meta.world_name() or DEFAULT_ENV) if watch is not None else ""
    if setup.fresh:
        run.write_config(setup.config)
        run.write_processor(setup.inputs.processor)
        run.write_status(
            "training", line=run.line, version=run.version, created=now_iso(),
            data=setup.inputs.describe(), provenance=run_provenance(setup.config, setup.inputs.store),
            **speed,
        )
    else:
        run.remove_partial_files()
        run.write_status("training")
    watched = {"watched": True, "watch": watch.describe(watch_env)} if watch is not None else {}
    period = run.start_period(
        done, world_size=fabric.world_size, device=str(fabric.device),
        resumed_from=done if setup.state else None, **watched, **speed,
    )
    player = WatchPlayer(run, watch, watch_env, period, after=done, last=setup.total) if watch is not None else None
    return period, player


def batch_order(setup: PeriodSetup) -> BatchOrder:
    """The training batch order, where the resumed run's stood (sequence rows or samples)."""
    fabric = setup.fabric
    return build_order(setup.config, setup.inputs.facts, fabric.global_rank, fabric.world_size, setup.state)


def training_loader(setup: PeriodSetup, order: BatchOrder) -> Iterable[dict[str, torch.Tensor]]:
    """The loader that reads ``order``'s batches (sequences, or samples augmented if configured)."""
    config, inputs = setup.config, setup.inputs
    pin = setup.fabric.device.type == "cuda"
    if setup.sequences:
        return make_loader(sequence_inputs(config, inputs.train), order, config.data.workers, pin, config.seed)
    return make_loader(inputs.train, order, config.data.workers, pin, config.seed,
                       augmenter=inputs.augmenter, start=setup.batches_done)


def validation(setup: PeriodSetup) -> Validation | None:
    """How the val split is evaluated (None without one): whole episodes for sequences."""
    config, val = setup.config, setup.inputs.val
    if val is None:
        return None
    if setup.sequences:
        lengths = check_sequence_data(setup.inputs.facts, config.data.val_split or "val")
        return SequenceValidation(lengths, SequenceBatches(val))
    rank, world = setup.fabric.global_rank, setup.fabric.world_size
    batches = val_batches(len(val), config.train.batch_size, rank, world)
    pin = setup.fabric.device.type == "cuda"
    return FrameValidation(make_loader(MaskedBatches(val), batches, config.data.workers, pin, config.seed))


def loop_parts(setup: PeriodSetup, order: BatchOrder, loader: Iterable[dict[str, torch.Tensor]]) -> LoopParts:
    """The model, its objective, input pipeline and schedule, and the data the loop reads."""
    config, inputs = setup.config, setup.inputs
    history = config.model.history
    return LoopParts(
        fabric=setup.fabric,
        config=config,
        policy=setup.policy,
        model=setup.model,
        optimizer=setup.optimizer,
        objective=Objective(
            config.model.heads, history.aux_weight if history else 0.0, inputs.processor.targets.scales(),
            speed_weight=config.model.speed_head.weight if config.model.speed_head else None,
        ),
        pipeline=InputPipeline(
            inputs.processor, channels_last=setup.speed is not None and setup.speed.channels_last
        ),
        schedule=build_schedule(config.train, setup.total),
        order=order,
        train_loader=loader,
        freeze=setup.freeze,
    )


def step_kind(setup: PeriodSetup, parts: LoopParts) -> StepKind:
    """The step for this kind of training, carrying on from the resumed state (BPTT)."""
    if setup.sequences:
        step = SequenceStep(setup.config.train.bptt, setup.total)
        if setup.state is not None:
            step.restore(setup.state, parts)
        return step
    if parts.order.helper_outputs:  # v2 balancing: one helper model per output
        return HelperStep(list(parts.order.helper_outputs))
    return FrameStep()


def finish_period(
    setup: PeriodSetup, loop: TrainLoop, period: int, player: WatchPlayer | None
) -> tuple[dict[str, Any] | None, str | None]:
    """Record the period finished (rank 0), then wait for the player: (its record, its note)."""
    run = setup.run
    if setup.fabric.is_global_zero:
        run.update_period(
            period, ended=now_iso(), status="finished", last_batch=loop.batches_done, ranks=loop.ranks
        )
        run.write_status("finished", last_checkpoint=loop.last_checkpoint)
    if player is None:
        return None, None
    # The period is recorded finished first: a Ctrl-C during this wait loses no training.
    outcome = player.finish()
    record = player.record(outcome)
    run.update_period(period, watch=record)
    return record, outcome.line(run)
