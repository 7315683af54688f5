"""Command conditioning (CIL) and the speed head (CILRS): what the policy reads off the window.

The command and the speed target travel in the telemetry window the loader, the runtime and
the exported graph already carry (``history``, [B, T, S]), so no new input exists anywhere
outside the policy: `WindowSplit` hands the history branch its own columns and reads the
command and the speed from the window's last row. The columns are standardised like every
history value; a one-hot stays readable: the active value's column is the only one above the
column mean (zero after standardising) as long as the training split saw every value at least
once, so ``argmax`` picks the branch exactly as on the raw one-hot.

`BranchedHead` is CIL's branched architecture (Codevilla et al. 2018): one head stack per
command value, all computed, the command's one picked by ``gather``, so an inactive branch's
parameters get exactly zero gradient from a sample, and the graph exports as plain ONNX ops.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from drivelab.config import HistoryConfig
from drivelab.config.policy_section import CommandConfig, SpeedHeadConfig

__all__ = ["SPEED_PREDICTION", "SPEED_TARGET", "BranchedHead", "SpeedHead", "WindowSplit", "branch_history"]

#: Where ``forward`` returns the speed head's prediction and its target (standardised, [B]).
SPEED_PREDICTION = "speed_head/prediction"
SPEED_TARGET = "speed_head/target"


def _columns(history: HistoryConfig) -> dict[str, list[int]]:
    """Each signal's columns in the [.., S] window (signals concatenated in config order)."""
    columns, start = {}, 0
    for name in history.signals:
        size = history.signal_size(name)
        columns[name] = list(range(start, start + size))
        start += size
    return columns


def branch_history(history: HistoryConfig | None, command: CommandConfig | None) -> HistoryConfig | None:
    """The history branch's own config: the window's signals less the command (None if none)."""
    if history is None or command is None:
        return history
    rest = [s for s in history.signals if s != command.signal]
    if not rest:
        return None
    sizes = {k: v for k, v in history.signal_sizes.items() if k != command.signal}
    return history.model_copy(update={"signals": rest, "signal_sizes": sizes})


class WindowSplit(nn.Module):
    """The raw window [.., T, S] -> the branch's columns, the command [.., C], the speed [..]."""

    def __init__(self, history: HistoryConfig, command: CommandConfig | None,
                 speed: SpeedHeadConfig | None) -> None:
        super().__init__()
        columns = _columns(history)
        self.width = history.step_size
        self.length = history.length
        branch = [c for name, cols in columns.items() if command is None or name != command.signal for c in cols]
        self.keep_all = len(branch) == self.width
        # index buffers are not persistent: checkpoints hold the same tensors with or without them
        self.register_buffer("branch_columns", torch.tensor(branch, dtype=torch.long), persistent=False)
        self.command_columns: tuple[int, int] | None = None
        if command is not None:
            cols = columns[command.signal]
            self.command_columns = (cols[0], cols[-1] + 1)
        self.speed_column = columns[speed.signal][0] if speed is not None else None

    def branch(self, window: torch.Tensor) -> torch.Tensor:
        return window if self.keep_all else window.index_select(-1, self.branch_columns)

    def command(self, window: torch.Tensor) -> torch.Tensor | None:
        """The current command (last row) [.., C], or None without one."""
        if self.command_columns is None:
            return None
        start, stop = self.command_columns
        return window[..., -1, start:stop]

    def speed(self, window: torch.Tensor) -> torch.Tensor:
        assert self.speed_column is not None
        return window[..., -1, self.speed_column]


class BranchedHead(nn.Module):
    """One head per command value; ``forward(features, command)`` answers the command's one.

    ``bin_values`` (classification branches) is the branches' own, so the runtime and export
    turn logits into actions as for a plain head.
    """

    def __init__(self, branches: Sequence[nn.Module]) -> None:
        super().__init__()
        self.branches = nn.ModuleList(branches)
        bins = getattr(branches[0], "bin_values", None)
        if bins is not None:
            self.register_buffer("bin_values", bins.clone(), persistent=False)

    def forward(self, features: torch.Tensor, command: torch.Tensor) -> torch.Tensor:
        outputs = torch.stack([branch(features) for branch in self.branches], dim=1)  # [N, branches, ...]
        index = command.argmax(dim=-1).reshape(-1, 1, *([1] * (outputs.ndim - 2)))
        index = index.expand(outputs.shape[0], 1, *outputs.shape[2:])
        return outputs.gather(1, index).squeeze(1)


class SpeedHead(nn.Sequential):
    """Backbone features -> the current (standardised) speed [N]: ReLU layers, one linear unit."""

    def __init__(self, inputs: int, widths: Sequence[int]) -> None:
        layers: list[nn.Module] = []
        for width in widths:
            layers += [nn.Linear(inputs, width), nn.ReLU()]
            inputs = width
        super().__init__(*layers, nn.Linear(inputs, 1))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return super().forward(features).squeeze(1)
