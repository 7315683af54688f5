"""The policy: frames (+ telemetry history) in, one tensor per output head out.

The same module serves training, offline and closed-loop evaluation and export. Its submodules
have fixed names (``backbone``, ``history``, ``neck``, ``heads.<output>``) because transfer
learning selects them by glob, as Charles did when taking the CNN from one run and the LSTM from
another (model_0009).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from drivelab.config import HeadConfig
from drivelab.models.heads import ClassificationHead, logits_to_action
from drivelab.models.history import HistoryBranch

__all__ = ["Policy"]


class Policy(nn.Module):
    """backbone(frames) [+ history(window)] -> neck -> heads.

    ``forward`` returns ``{output: [B] value | [B, n_bins] logits}`` plus the history branch's
    ``aux/<output>`` entries when it has auxiliary heads.
    """

    def __init__(
        self,
        backbone: nn.Module,
        history: HistoryBranch | None,
        neck: nn.Sequential,
        heads: Mapping[str, nn.Module],
        head_configs: Mapping[str, HeadConfig],
        frame_shape: tuple[int, int, int],
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.history = history
        self.neck = neck
        self.heads = nn.ModuleDict(dict(heads))
        self.head_configs = dict(head_configs)
        self.frame_shape = frame_shape

    @property
    def outputs(self) -> list[str]:
        """Head (output) names in config order."""
        return list(self.heads)

    @property
    def history_shape(self) -> tuple[int, int] | None:
        """[T, S] of the expected history window, or None without a history branch."""
        if self.history is None:
            return None
        return self.history.length, self.history.step_size

    def forward(
        self, frames: torch.Tensor, history: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        """Run the policy on [B, 3k, H, W] float frames and an optional [B, T, S] window."""
        if frames.ndim != 4 or tuple(frames.shape[1:]) != self.frame_shape:
            raise ValueError(
                f"frames must be [B, {', '.join(map(str, self.frame_shape))}], "
                f"got {list(frames.shape)}"
            )
        features = self.backbone(frames).flatten(1)
        results: dict[str, torch.Tensor] = {}
        if self.history is not None:
            if history is None:
                raise ValueError("this policy has a history branch: pass a [B, T, S] history")
            vector, aux = self.history(history)
            features = torch.cat([features, vector], dim=1)
            results.update(aux)
        elif history is not None:
            raise ValueError("this policy has no history branch; pass history=None")
        shared = self.neck(features)
        for name, head in self.heads.items():
            results[name] = head(shared)
        return results

    def actions(
        self,
        results: Mapping[str, torch.Tensor],
        sample: bool = False,
        generator: torch.Generator | None = None,
    ) -> dict[str, torch.Tensor]:
        """Map head results to [B] action values (bin value for classification heads)."""
        actions: dict[str, torch.Tensor] = {}
        for name, head in self.heads.items():
            if isinstance(head, ClassificationHead):
                actions[name] = logits_to_action(results[name], head.bin_values, sample, generator)
            else:
                actions[name] = results[name]
        return actions
