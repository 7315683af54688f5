"""The telemetry-history branch: the last T steps of controls, speed and purpose as a vector.

Charles's models learned that recent controls predict the next action well, which made a model
that fed the branch's *prediction* onward lean on it and repeat the last action (model_0009).
Passing the LSTM's final hidden state instead (the "thought vector", model_0008_v7) let the
model use the history without being handed a shortcut; both modes are kept so the experiment
can be repeated. Auxiliary heads on the branch alone (model_0008_v4) give it its own loss.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from drivelab.config import HeadConfig, HistoryConfig

__all__ = ["AUX_PREFIX", "HistoryBranch"]

#: Auxiliary outputs are returned under ``aux/<output>`` so the trainer can weight them apart.
AUX_PREFIX = "aux/"


class _LSTMEncoder(nn.Module):
    """Stacked LSTM over the window; its output is the last layer's final hidden state."""

    def __init__(self, step_size: int, width: int, layers: int) -> None:
        super().__init__()
        self.lstm = nn.LSTM(step_size, width, num_layers=layers, batch_first=True)

    def forward(self, window: torch.Tensor) -> torch.Tensor:
        _, (hidden, _) = self.lstm(window)
        return hidden[-1]


class _DenseEncoder(nn.Module):
    """The window flattened into a stack of ReLU dense layers (model_0007)."""

    def __init__(self, step_size: int, length: int, width: int, layers: int) -> None:
        super().__init__()
        stack: list[nn.Module] = [nn.Flatten(1)]
        inputs = step_size * length
        for _ in range(layers):
            stack += [nn.Linear(inputs, width), nn.ReLU()]
            inputs = width
        self.layers = nn.Sequential(*stack)

    def forward(self, window: torch.Tensor) -> torch.Tensor:
        return self.layers(window)


class HistoryBranch(nn.Module):
    """[B, T, S] telemetry window -> vector fed to the neck, plus optional ``aux/`` outputs.

    ``S`` is the signals' values per step concatenated in config order. With
    ``output: thought`` the vector is the encoder state (``width`` values); with
    ``output: prediction`` it is the branch's own per-head outputs (one value per regression
    head, one logit per bin per classification head), which are also its aux outputs.
    """

    def __init__(self, config: HistoryConfig, heads: Sequence[HeadConfig]) -> None:
        super().__init__()
        self.length = config.length
        self.step_size = config.step_size
        self.mode = config.output
        self.head_sizes = {head.output: head.size for head in heads}
        self.head_kinds = {head.output: head.kind for head in heads}
        self.with_aux = config.aux_weight > 0
        self.dropout = float(config.dropout)
        if config.kind == "lstm":
            self.encoder: nn.Module = _LSTMEncoder(self.step_size, config.width, config.layers)
        else:
            self.encoder = _DenseEncoder(self.step_size, config.length, config.width, config.layers)
        if self.mode == "prediction":
            self.prediction = nn.Linear(config.width, sum(self.head_sizes.values()))
            self.out_features = sum(self.head_sizes.values())
        else:
            self.out_features = config.width
            if self.with_aux:
                self.aux = nn.ModuleDict(
                    {name: nn.Linear(config.width, size) for name, size in self.head_sizes.items()}
                )

    def forward(self, window: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Return (vector for the neck [B, out_features], aux outputs by ``aux/<output>``)."""
        if window.ndim != 3 or tuple(window.shape[1:]) != (self.length, self.step_size):
            raise ValueError(
                f"history must be [B, {self.length}, {self.step_size}], got {list(window.shape)}"
            )
        thought = self.encoder(window)
        if self.mode == "prediction":
            vector = self.prediction(thought)
            aux = self._split(vector) if self.with_aux else {}
            return self._drop(vector), aux
        if not self.with_aux:
            return self._drop(thought), {}
        return self._drop(thought), {
            AUX_PREFIX + name: self._squeeze(name, layer(thought))
            for name, layer in self.aux.items()
        }

    def _drop(self, vector: torch.Tensor) -> torch.Tensor:
        """Training only: whole samples' vectors zeroed with chance ``dropout`` (aux heads keep theirs)."""
        if not self.training or self.dropout == 0:
            return vector
        keep = torch.rand(vector.shape[0], 1, device=vector.device) >= self.dropout
        return vector * keep.to(vector.dtype)

    def _split(self, vector: torch.Tensor) -> dict[str, torch.Tensor]:
        parts = torch.split(vector, list(self.head_sizes.values()), dim=1)
        return {
            AUX_PREFIX + name: self._squeeze(name, part)
            for name, part in zip(self.head_sizes, parts, strict=True)
        }

    def _squeeze(self, name: str, values: torch.Tensor) -> torch.Tensor:
        """Regression outputs are [B] like the main heads; logits stay [B, n_bins]."""
        return values.squeeze(1) if self.head_kinds[name] == "regression" else values
