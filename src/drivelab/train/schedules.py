"""Learning-rate schedules as pure functions of the batch number.

Charles' model_0004_v3 only converged once the learning rate was warmed up over the first
batches; after warmup the rate stays constant, drops by a factor every ``step_batches``, or follows
a cosine to ``min_lr``. Because the rate depends on the batch number alone, resuming needs no
scheduler state beyond the batch counter, and a resumed run gets exactly the same rates.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from drivelab.errors import DrivelabError

SCHEDULES = ("constant", "step", "cosine")


@dataclass(frozen=True)
class LRSchedule:
    """Linear warmup from ~0 to ``lr`` over ``warmup_batches``, then ``kind``.

    ``total_batches`` is the planned length of training (needed by ``cosine`` only).
    """

    lr: float
    kind: str = "constant"
    warmup_batches: int = 0
    step_batches: int = 1000
    gamma: float = 0.1
    min_lr: float = 0.0
    total_batches: int = 0

    def __post_init__(self) -> None:
        if self.kind not in SCHEDULES:
            raise DrivelabError(f"unknown train.schedule {self.kind!r}: use one of {', '.join(SCHEDULES)}")
        if self.warmup_batches < 0:
            raise DrivelabError(f"train.warmup_batches must be >= 0 (got {self.warmup_batches})")
        if self.kind == "step" and self.step_batches < 1:
            raise DrivelabError(f"train.step_batches must be >= 1 (got {self.step_batches})")

    def __call__(self, batch: int) -> float:
        """Rate for the update that produces batch ``batch + 1`` (``batch`` updates done so far)."""
        if batch < self.warmup_batches:
            return self.lr * (batch + 1) / self.warmup_batches
        after = batch - self.warmup_batches
        if self.kind == "constant":
            return self.lr
        if self.kind == "step":
            return self.lr * self.gamma ** (after // self.step_batches)
        span = max(self.total_batches - self.warmup_batches, 1)
        progress = min(after / span, 1.0)
        return self.min_lr + (self.lr - self.min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))

    def state(self) -> dict[str, float | int | str]:
        """What the checkpoint records, so a resume can tell that the schedule is unchanged."""
        return {
            "lr": self.lr,
            "kind": self.kind,
            "warmup_batches": self.warmup_batches,
            "step_batches": self.step_batches,
            "gamma": self.gamma,
            "min_lr": self.min_lr,
            "total_batches": self.total_batches,
        }
