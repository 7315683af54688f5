"""Input overrides: one group of a policy's raw inputs replaced before its pipeline runs.

`drivelab diagnose` asks what a policy does when it cannot see the road (frames blanked) or
cannot read its past (history held at its training mean). The same override serves offline
scoring (a batch of recorded samples) and closed-loop driving (the runtime's one-sample batch),
so "blank frames" means the same thing in both, and the runtime is not copied to test it.
It is picklable (plain arrays) because evaluation workers receive it inside a `DriverSpec`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class InputOverride:
    """Replace the frame stack and/or some history columns of every sample.

    ``frames``: uint8 [3k, H, W] (the source frame size) shown instead of every frame stack.
    ``history``: float32 [S] raw values written into the ``columns`` of every history row
    (all columns when ``columns`` is empty); raw units, so the pipeline standardises them.
    """

    frames: np.ndarray | None = None
    history: np.ndarray | None = None
    columns: tuple[int, ...] = ()
    name: str = "override"

    def apply(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The batch with the overridden groups replaced (the input batch is not modified)."""
        out = dict(batch)
        if self.frames is not None:
            frames = batch["frames"]
            fill = torch.as_tensor(self.frames, dtype=frames.dtype, device=frames.device)
            out["frames"] = fill.expand_as(frames).clone()
        if self.history is not None and "history" in batch:
            history = batch["history"].clone()
            values = torch.as_tensor(self.history, dtype=history.dtype, device=history.device)
            columns = list(self.columns) or list(range(history.shape[-1]))
            history[..., columns] = values[columns]
            out["history"] = history
        return out
