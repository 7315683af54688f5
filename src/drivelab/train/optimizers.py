"""The optimizer and learning-rate schedule a `TrainConfig` asks for.

kkelchte/pilot compared SGD, Adam and Adadelta over a learning-rate grid; Charles used Adam with
a warmup. Weight decay is applied the way each torch optimizer defines it (L2 in the gradient for
SGD / Adam / Adadelta, decoupled for AdamW). Only parameters that require gradients are handed
over, so a frozen backbone gets no optimizer state and no weight decay.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch

from drivelab.config import (
    AdadeltaConfig,
    AdamConfig,
    AdamWConfig,
    CosineScheduleConfig,
    SGDConfig,
    StepScheduleConfig,
    TrainConfig,
)
from drivelab.train.schedules import LRSchedule


def build_optimizer(
    config: TrainConfig, parameters: Iterable[torch.nn.Parameter] | Sequence[dict[str, Any]]
) -> torch.optim.Optimizer:
    """The configured optimizer over the trainable ``parameters`` at the schedule's start rate.

    ``parameters`` may also be param groups (`drivelab.models.freezing.parameter_groups`): then
    they are used as given, frozen group included, and each group's ``lr_scale`` scales the
    schedule's rate (`set_learning_rate`).
    """
    given = list(parameters)
    params: Any = (
        [g for g in given if g["params"]]
        if given and isinstance(given[0], dict)
        else [p for p in given if p.requires_grad]
    )
    opt = config.optimizer
    decay = config.weight_decay
    if isinstance(opt, SGDConfig):
        return torch.optim.SGD(
            params, lr=config.lr, momentum=opt.momentum, nesterov=opt.nesterov, weight_decay=decay
        )
    if isinstance(opt, AdamConfig):
        return torch.optim.Adam(params, lr=config.lr, betas=opt.betas, eps=opt.eps, weight_decay=decay)
    if isinstance(opt, AdamWConfig):
        return torch.optim.AdamW(params, lr=config.lr, betas=opt.betas, eps=opt.eps, weight_decay=decay)
    if isinstance(opt, AdadeltaConfig):
        return torch.optim.Adadelta(params, lr=config.lr, rho=opt.rho, eps=opt.eps, weight_decay=decay)
    raise TypeError(f"unhandled optimizer config {type(opt).__name__}")


def build_schedule(config: TrainConfig, total_batches: int) -> LRSchedule:
    """Warmup over ``train.warmup_batches``, then the configured schedule until ``total_batches``."""
    sched = config.schedule
    if isinstance(sched, StepScheduleConfig):
        return LRSchedule(
            config.lr, "step", config.warmup_batches, step_batches=sched.every, gamma=sched.gamma,
            total_batches=total_batches,
        )
    if isinstance(sched, CosineScheduleConfig):
        return LRSchedule(
            config.lr, "cosine", config.warmup_batches, min_lr=sched.min_lr,
            total_batches=total_batches,
        )
    return LRSchedule(config.lr, "constant", config.warmup_batches, total_batches=total_batches)


def set_learning_rate(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """The schedule's rate, times a group's ``lr_scale`` (a once-frozen group's ``unfreeze_lr``)."""
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)
