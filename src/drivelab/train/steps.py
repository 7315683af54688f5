"""What one training step and one validation pass do, per kind of training.

The loop (`drivelab.train.loop.TrainLoop`) owns everything around a step: the learning rate,
freezing, the out-of-memory advice, gradient clipping, the optimizer update, the boundaries. A
`StepKind` owns only the forward and backward of one batch (and what that needs saved in a
checkpoint), a `Validation` only the per-sample sums of one pass over the val split. The kind is
chosen once when a period is set up (`drivelab.train.period`): frame batches here, Charles'
helper models (`drivelab.train.helper_models`), BPTT sequences (`drivelab.train.sequence_steps`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from lightning_fabric import Fabric

from drivelab.config import ExperimentConfig
from drivelab.models.freezing import FreezePlan
from drivelab.models.objectives import Objective
from drivelab.order.base import BatchOrder
from drivelab.processor.pipeline import InputPipeline
from drivelab.train.schedules import LRSchedule

#: What a step hands the loop: the logged values (device tensors) and whether the optimizer
#: updates now (False while BPTT accumulates gradients over an episode's windows).
Backward = tuple[dict[str, torch.Tensor], bool]


@dataclass
class LoopParts:
    """What the loop and its step kind read: the model, its optimisation and its data."""

    fabric: Fabric
    config: ExperimentConfig
    policy: torch.nn.Module  # the plain module (its weights are what checkpoints hold)
    model: Any  # the Fabric-wrapped module used for forward passes
    optimizer: Any
    objective: Objective
    pipeline: InputPipeline
    schedule: LRSchedule
    order: BatchOrder  # the training batch order (sizes, position, saved state)
    train_loader: Iterable[dict[str, torch.Tensor]]
    freeze: FreezePlan | None = None  # model.freeze: applied before every step (unfreeze_at)


class StepKind(Protocol):
    """The forward and backward of one training batch, and the checkpoint state it adds."""

    def backward(self, parts: LoopParts, batch: dict[str, torch.Tensor], number: int) -> Backward:
        """Batch ``number`` (0-based, on the device): zero or keep the gradients, backpropagate."""
        ...

    def state(self, parts: LoopParts, batches_done: int) -> dict[str, Any]:
        """Trainer-state entries beyond the loop's (collective under DDP: every rank calls it)."""
        ...


class Validation(Protocol):
    """One pass over this rank's share of the val split."""

    def sums(self, parts: LoopParts, names: list[str]) -> torch.Tensor:
        """float64 [len(names) + 1]: each name's per-sample sum, then the samples counted."""
        ...


def gather_ranks(fabric: Fabric, value: Any) -> list[Any]:
    """Every rank's ``value`` (a picklable object), in rank order, on every rank."""
    if fabric.world_size == 1:
        return [value]
    gathered: list[Any] = [None] * fabric.world_size
    torch.distributed.all_gather_object(gathered, value)
    return gathered


class FrameStep:
    """A batch of single samples: one forward, the objective, one backward, always an update."""

    def backward(self, parts: LoopParts, batch: dict[str, torch.Tensor], number: int) -> Backward:
        predictions = parts.model(*parts.pipeline(batch))
        terms = parts.objective(predictions, batch)
        parts.optimizer.zero_grad(set_to_none=True)
        parts.fabric.backward(terms.total)
        return terms.values, True

    def state(self, parts: LoopParts, batches_done: int) -> dict[str, Any]:
        return {}  # the loop's entries are all a frame batch depends on


@dataclass
class FrameValidation:
    """Loss and MAE per output over the val split's samples (padding masked by ``valid``)."""

    loader: Iterable[dict[str, torch.Tensor]]  # `drivelab.order.validation.MaskedBatches` batches

    def sums(self, parts: LoopParts, names: list[str]) -> torch.Tensor:
        sums = torch.zeros(len(names) + 1, dtype=torch.float64, device=parts.fabric.device)
        for raw in self.loader:
            batch = parts.fabric.to_device(raw)
            predictions = parts.model(*parts.pipeline(batch))
            per_sample = parts.objective.per_sample(predictions, batch)
            valid = batch["valid"].to(torch.float64)
            terms = [(per_sample[n].double() * valid).sum() for n in names]
            sums += torch.stack([*terms, valid.sum()])
        return sums
