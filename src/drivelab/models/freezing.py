"""Freezing: ``model.freeze`` globs fix parameters until ``unfreeze_at``, then train them again.

Frozen parameters get no gradient and their BatchNorm layers stay in eval mode (as Keras does
for ``trainable=False``); whether a parameter is frozen is a pure function of the batch count, so
a resumed run freezes and unfreezes where an uninterrupted one does. Bad settings (a glob that
matches nothing, freezing every parameter, an unfreeze that never happens) are refused before a
run folder exists. Loading other runs' weights (``init_from``) is `drivelab.models.transfer`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import nn

from drivelab.config import ModelConfig
from drivelab.models.name_globs import TransferError, glob_matches, matching, top_level


def _is_batchnorm(module: nn.Module) -> bool:
    return isinstance(module, nn.modules.batchnorm._BatchNorm)


@dataclass(frozen=True)
class FreezePlan:
    """Which parameters are frozen, until which batch, and at what learning-rate scale after.

    Whether a parameter is frozen is a pure function of ``batches_done``, so a resumed run
    freezes and unfreezes exactly where an uninterrupted one does.
    """

    parameters: tuple[str, ...]
    batchnorms: tuple[str, ...]  # BatchNorm modules whose weights are all frozen: kept in eval
    unfreeze_at: int | None = None
    lr_scale: float = 1.0  # unfreeze_lr / train.lr for the once-frozen parameter group

    def frozen(self, batches_done: int) -> bool:
        return self.unfreeze_at is None or batches_done < self.unfreeze_at

    def apply(self, policy: nn.Module, batches_done: int) -> None:
        """Set ``requires_grad`` for the batch after ``batches_done`` and the BatchNorm modes.

        Called before every step: the loop puts the model back in train mode after validation,
        and this puts frozen BatchNorm layers back in eval mode so their statistics stay fixed
        (and in train mode again once they are unfrozen).
        """
        frozen = self.frozen(batches_done)
        names = set(self.parameters)
        for name, parameter in policy.named_parameters():
            if name in names:
                parameter.requires_grad_(not frozen)
        if self.batchnorms:
            modules = dict(policy.named_modules())
            for name in self.batchnorms:  # back in train mode once unfrozen
                modules[name].train(policy.training and not frozen)

    def check(self, total_batches: int, world_size: int) -> None:
        """Refuse an unfreeze that never happens or that DDP cannot follow."""
        if self.unfreeze_at is None:
            return
        if self.unfreeze_at >= total_batches:
            raise TransferError(
                f"model.unfreeze_at: batch {self.unfreeze_at} is not before the last batch "
                f"({total_batches}), so the frozen parts would never train; lower it or drop it"
            )
        if world_size > 1:
            raise TransferError(
                "model.unfreeze_at: unfreezing during training is not supported on more than "
                f"one process (DDP fixes its parameters at start; {world_size} here); train the "
                "frozen phase, then start a new run with init_from and no freeze"
            )

    def describe(self) -> dict[str, Any]:
        return {"parameters": len(self.parameters), "batchnorms": len(self.batchnorms),
                "unfreeze_at": self.unfreeze_at, "lr_scale": self.lr_scale}


def plan_freeze(
    config: ModelConfig,
    policy: nn.Module,
    batches_per_epoch: int | None = None,
    lr: float | None = None,
) -> FreezePlan | None:
    """Resolve ``model.freeze`` against the policy; None when nothing is frozen.

    ``batches_per_epoch`` turns ``unfreeze_at_epoch`` into a batch; ``lr`` (``train.lr``) sets
    the scale of ``unfreeze_lr``.
    """
    if not config.freeze:
        return None
    names = [name for name, _ in policy.named_parameters()]
    for glob in config.freeze:
        if not any(glob_matches(name, glob) for name in names):
            raise TransferError(
                f"model.freeze: {glob!r} matches no parameter of the policy; it has "
                f"{top_level(names)}"
            )
    frozen = matching(names, config.freeze)
    if len(frozen) == len(names):
        raise TransferError(
            f"model.freeze: {config.freeze} freezes every parameter, so nothing would train; "
            "leave the neck or a head out"
        )
    frozen_set = set(frozen)
    batchnorms = []
    for module_name, module in policy.named_modules():
        if not _is_batchnorm(module):
            continue
        own = [f"{module_name}.{n}" for n, _ in module.named_parameters()]
        if own:
            fixed = all(n in frozen_set for n in own)
        else:  # no affine weights: the globs decide by the statistics' names
            fixed = any(glob_matches(f"{module_name}.running_mean", g) for g in config.freeze)
        if fixed:
            batchnorms.append(module_name)
    unfreeze_at = config.unfreeze_at
    if config.unfreeze_at_epoch is not None:
        if batches_per_epoch is None:
            raise TransferError("model.unfreeze_at_epoch needs the epoch length (train only)")
        unfreeze_at = config.unfreeze_at_epoch * batches_per_epoch
    scale = 1.0
    if config.unfreeze_lr is not None and lr is not None:
        scale = config.unfreeze_lr / lr
    return FreezePlan(tuple(frozen), tuple(batchnorms), unfreeze_at, scale)


def parameter_groups(policy: nn.Module, plan: FreezePlan | None) -> list[dict[str, Any]]:
    """Optimizer groups: the trainable parameters, then the frozen ones (with their LR scale).

    The frozen group is in the optimizer from the start (its parameters get no gradient while
    frozen, and torch optimizers skip those: no update, no state, no weight decay), so the
    optimizer's state dict has the same layout before and after ``unfreeze_at`` and a resume
    loads it exactly.
    """
    if plan is None:
        return [{"params": [p for p in policy.parameters() if p.requires_grad]}]
    names = set(plan.parameters)
    named = list(policy.named_parameters())
    return [
        {"params": [p for n, p in named if n not in names], "lr_scale": 1.0},
        {"params": [p for n, p in named if n in names], "lr_scale": plan.lr_scale},
    ]
