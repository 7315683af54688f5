"""The policy: frames (+ telemetry history) in, one tensor per output head out.

The same module serves training, offline and closed-loop evaluation and export. Its submodules
have fixed names (``backbone``, ``history``, ``neck``, ``heads.<output>``) because transfer
learning selects them by glob, as Charles did when taking the CNN from one run and the LSTM from
another (model_0009). A command-conditional policy's window also carries the command
(`models.conditioning`): ``concat`` joins it to the neck's input, ``branched`` heads are
``heads.<output>.branches.<i>``; the speed head (CILRS) is ``speed_head``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from drivelab.config import HeadConfig, ModelConfig
from drivelab.models.conditioning import SPEED_PREDICTION, SPEED_TARGET, WindowSplit
from drivelab.models.heads import logits_to_action
from drivelab.models.history import HistoryBranch
from drivelab.models.kinds import PolicyKind, register_kind

__all__ = ["Policy", "PolicyParts", "StatelessKind"]


@dataclass
class PolicyParts:
    """What every kind's policy is made of; `models.factory` builds them, a kind assembles them."""

    backbone: nn.Module
    history: HistoryBranch | None
    neck: nn.Sequential
    heads: Mapping[str, nn.Module]
    head_configs: Mapping[str, HeadConfig]
    frame_shape: tuple[int, int, int]
    window: WindowSplit | None = None
    command_mode: str | None = None
    speed_head: nn.Module | None = None

    def as_kwargs(self) -> dict:
        return dict(vars(self))


class Policy(nn.Module):
    """backbone(frames) [+ history(window)] [+ command] -> neck -> heads.

    ``forward`` returns ``{output: [B] value | [B, n_bins] logits}`` plus the history branch's
    ``aux/<output>`` entries when it has auxiliary heads, and the speed head's prediction and
    target (`SPEED_PREDICTION`, `SPEED_TARGET`) when it has one.
    """

    kind_name: ClassVar[str] = "stateless"

    def __init__(
        self,
        backbone: nn.Module,
        history: HistoryBranch | None,
        neck: nn.Sequential,
        heads: Mapping[str, nn.Module],
        head_configs: Mapping[str, HeadConfig],
        frame_shape: tuple[int, int, int],
        window: WindowSplit | None = None,
        command_mode: str | None = None,
        speed_head: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.history = history
        self.neck = neck
        self.heads = nn.ModuleDict(dict(heads))
        self.head_configs = dict(head_configs)
        self.frame_shape = frame_shape
        self.window = window
        self.command_mode = command_mode
        if speed_head is not None:  # registered only when present: old checkpoints keep their keys
            self.speed_head = speed_head

    @property
    def outputs(self) -> list[str]:
        """Head (output) names in config order."""
        return list(self.heads)

    @property
    def history_shape(self) -> tuple[int, int] | None:
        """[T, S] of the expected telemetry window (command included), or None without one."""
        if self.window is not None:
            return self.window.length, self.window.width
        if self.history is None:
            return None
        return self.history.length, self.history.step_size

    @property
    def reads_window(self) -> bool:
        return self.window is not None or self.history is not None

    def forward(
        self, frames: torch.Tensor, history: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        """Run the policy on [B, 3k, H, W] float frames and an optional [B, T, S] window."""
        if frames.ndim != 4 or tuple(frames.shape[1:]) != self.frame_shape:
            raise ValueError(
                f"frames must be [B, {', '.join(map(str, self.frame_shape))}], "
                f"got {list(frames.shape)}"
            )
        shared, results, command = self.encode(frames, history)
        results.update(self.apply_heads(shared, command))
        return results

    def encode(
        self, frames: torch.Tensor, history: torch.Tensor | None
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor], torch.Tensor | None]:
        """[N, 3k, H, W] frames (+ [N, T, S] window) -> neck output, side results, command."""
        self._check_window(history)
        features = self.backbone(frames).flatten(1)
        results: dict[str, torch.Tensor] = {}
        command = None
        if self.window is not None and history is not None:
            command = self.window.command(history)
            if self.window.speed_column is not None:
                results[SPEED_PREDICTION] = self.speed_head(features)
                results[SPEED_TARGET] = self.window.speed(history).detach()
            history = self.window.branch(history)
        joined = [features]
        if self.history is not None:
            assert history is not None
            vector, aux = self.history(history)
            joined.append(vector)
            results.update(aux)
        if command is not None and self.command_mode == "concat":
            joined.append(command)
        features = torch.cat(joined, dim=1) if len(joined) > 1 else features
        return self.neck(features), results, command

    def as_sequences(
        self, frames: torch.Tensor, history: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None, bool]:
        """A sequence kind's inputs as [B, T, ...]: one step [B, ...] gets a time axis of 1.

        Returns the frames, the history and whether the input was a single step (the caller
        removes the time axis from its outputs again)."""
        single = frames.ndim == 4
        if single:
            frames = frames.unsqueeze(0)
            history = history.unsqueeze(0) if history is not None else None
        if frames.ndim != 5 or tuple(frames.shape[2:]) != self.frame_shape:
            raise ValueError(f"frames must be [B, T, {', '.join(map(str, self.frame_shape))}], "
                             f"got {list(frames.shape)}")
        return frames, history, single

    def encode_steps(
        self, frames: torch.Tensor, history: torch.Tensor | None, lengths: torch.Tensor | None
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor], torch.Tensor | None]:
        """[B, T, ...] sequences -> the neck's output at every step [B, T, F], side results, command.

        What every sequence kind's core reads (the LSTM's input, the transformer's tokens). With
        ``lengths`` ([B] valid steps per row) padded frames never reach the backbone: their
        features are zeros and there are no side results.
        """
        batch, steps = frames.shape[:2]
        flat_frames = frames.reshape(batch * steps, *self.frame_shape)
        flat_history = None
        if self.reads_window:
            if history is None:
                raise ValueError("this policy has a history branch: pass a [B, T, L, S] history")
            flat_history = history.reshape(batch * steps, *history.shape[2:])
        elif history is not None:
            raise ValueError("this policy has no history branch; pass history=None")
        # the command of every step, padding included (the heads read it; warmup discards them)
        command = self.window.command(flat_history) if self.window is not None and flat_history is not None else None
        valid: torch.Tensor | None = None
        if lengths is not None:
            # Only real frames go through the backbone; padding stays zero features.
            positions = torch.arange(steps, device=frames.device)
            valid = (positions[None, :] < lengths.to(frames.device)[:, None]).reshape(-1)
            flat_frames = flat_frames[valid]
            flat_history = flat_history[valid] if flat_history is not None else None
        features, aux, _ = self.encode(flat_frames, flat_history)
        if valid is not None:
            full = features.new_zeros(batch * steps, features.shape[1])
            full[valid] = features
            features = full
            aux = {}  # warmup only needs the state
        return features.reshape(batch, steps, -1), aux, command

    def apply_heads(self, shared: torch.Tensor, command: torch.Tensor | None) -> dict[str, torch.Tensor]:
        """Every head on the shared features; branched heads pick the command's branch."""
        if self.command_mode == "branched":
            assert command is not None
            return {name: head(shared, command) for name, head in self.heads.items()}
        return {name: head(shared) for name, head in self.heads.items()}

    def _check_window(self, history: torch.Tensor | None) -> None:
        if self.reads_window and history is None:
            raise ValueError("this policy has a history branch: pass a [B, T, S] history")
        if not self.reads_window and history is not None:
            raise ValueError("this policy has no history branch; pass history=None")

    def actions(
        self,
        results: Mapping[str, torch.Tensor],
        sample: bool = False,
        generator: torch.Generator | None = None,
    ) -> dict[str, torch.Tensor]:
        """Map head results to [B] action values (bin value for classification heads)."""
        actions: dict[str, torch.Tensor] = {}
        for name, head in self.heads.items():
            if self.head_configs[name].categorical:
                actions[name] = logits_to_action(results[name], head.bin_values, sample, generator)
            else:
                actions[name] = results[name]
        return actions


@register_kind
class StatelessKind(PolicyKind):
    """One frame (stack) and telemetry window in, actions out; nothing carried between steps."""

    name = "stateless"

    def build(self, parts: PolicyParts, config: ModelConfig, core: nn.Module | None) -> Policy:
        return Policy(**parts.as_kwargs())
