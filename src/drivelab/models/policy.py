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

from drivelab.config import ConfigError, HeadConfig, ModelConfig
from drivelab.models.backbones import build_backbone
from drivelab.models.budget import check_fits_memory, meta_parameter_count
from drivelab.models.heads import ClassificationHead, build_head, build_neck, logits_to_action
from drivelab.models.history import HistoryBranch

__all__ = ["Policy", "build_policy"]


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


def _history_step_check(config: ModelConfig, signal_sizes: Mapping[str, int] | None) -> None:
    """The dataset's signal sizes, when known, must agree with the config's."""
    if config.history is None or signal_sizes is None:
        return
    for name in config.history.signals:
        if name not in signal_sizes:
            known = ", ".join(signal_sizes) or "none"
            raise ConfigError(
                f"model.history.signals: {name!r} is not a recorded signal; available: {known}"
            )
        if int(signal_sizes[name]) != config.history.signal_size(name):
            raise ConfigError(
                f"model.history.signal_sizes.{name}: the data has {signal_sizes[name]} values "
                f"per step, the config says {config.history.signal_size(name)}"
            )


def build_policy(
    config: ModelConfig,
    frame_shape: tuple[int, int, int],
    history_signal_sizes: Mapping[str, int] | None = None,
    batch_size: int = 1,
) -> Policy:
    """Assemble the policy for frames of ``frame_shape`` [C=3k, H, W].

    ``history_signal_sizes`` (signal name -> values per step, e.g. from the dataset's signal
    specs) is checked against ``model.history`` when given; the config's sizes build the model.
    First the policy is sized on the meta device: one that cannot fit in memory (at
    ``batch_size`` samples) is refused with the figures instead of being allocated.
    """
    offline = config.model_copy(update={"backbone": config.backbone.model_copy(update={"pretrained": False})})
    count = meta_parameter_count(lambda: _assemble(offline, frame_shape, history_signal_sizes))
    check_fits_memory(count, frame_shape, batch_size, config.backbone.name)
    return _assemble(config, frame_shape, history_signal_sizes)


def _assemble(
    config: ModelConfig,
    frame_shape: tuple[int, int, int],
    history_signal_sizes: Mapping[str, int] | None,
) -> Policy:
    channels, height, width = frame_shape
    if channels % 3 != 0:
        raise ConfigError(f"data.frames: frames must be stacked RGB, got {channels} channels")
    backbone = build_backbone(config.backbone, channels // 3, (height, width))
    _history_step_check(config, history_signal_sizes)
    history = HistoryBranch(config.history, config.heads) if config.history is not None else None
    joined = int(backbone.num_features) + (history.out_features if history is not None else 0)
    neck = build_neck(joined, config.neck)
    head_inputs = config.neck[-1] if config.neck else joined
    if config.recurrent is not None:  # the LSTM sits between the neck and the heads
        from drivelab.models.recurrent import RecurrentPolicy

        lstm = nn.LSTM(
            head_inputs, config.recurrent.hidden, num_layers=config.recurrent.layers, batch_first=True
        )
        head_inputs = config.recurrent.hidden
    heads = {
        head.output: build_head(head, head_inputs, index) for index, head in enumerate(config.heads)
    }
    if config.recurrent is not None:
        return RecurrentPolicy(
            backbone=backbone,
            history=history,
            neck=neck,
            lstm=lstm,
            heads=heads,
            head_configs={head.output: head for head in config.heads},
            frame_shape=(channels, height, width),
        )
    return Policy(
        backbone=backbone,
        history=history,
        neck=neck,
        heads=heads,
        head_configs={head.output: head for head in config.heads},
        frame_shape=(channels, height, width),
    )
