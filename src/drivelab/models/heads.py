"""The neck (shared dense layers) and one head per output (regression value or bin logits).

Charles's heads are small dense stacks, each layer a quarter of the previous width, ending in
one linear unit; kkelchte's discrete steering is a classification over three bins whose centre
is the action. Both are here, and the helpers that translate between continuous actions and
bins live next to the head that needs them, so the trainer and the runtime agree on the mapping.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from drivelab.config import ConfigError, HeadConfig

__all__ = [
    "ClassificationHead",
    "RegressionHead",
    "action_to_bin",
    "build_head",
    "build_neck",
    "logits_to_action",
]


def _dense_stack(inputs: int, widths: Sequence[int]) -> list[nn.Module]:
    layers: list[nn.Module] = []
    for width in widths:
        layers += [nn.Linear(inputs, width), nn.ReLU()]
        inputs = width
    return layers


def build_neck(inputs: int, widths: Sequence[int]) -> nn.Sequential:
    """Dense ReLU layers over the joined backbone (+ history) features; empty = pass-through."""
    return nn.Sequential(*_dense_stack(inputs, widths))


class RegressionHead(nn.Sequential):
    """Hidden dense ReLU layers, then one linear unit; the output is [B]."""

    def __init__(self, inputs: int, widths: Sequence[int]) -> None:
        layers = _dense_stack(inputs, widths)
        layers.append(nn.Linear(widths[-1] if widths else inputs, 1))
        super().__init__(*layers)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return super().forward(features).squeeze(1)


class ClassificationHead(nn.Sequential):
    """Hidden dense ReLU layers, then one logit per bin; the output is [B, n_bins].

    The bin values travel with the head (a non-persistent buffer: on the right device, not in
    checkpoints) so a runtime can turn logits into an action without the config.
    """

    bin_values: torch.Tensor

    def __init__(self, inputs: int, widths: Sequence[int], bin_values: Sequence[float]) -> None:
        layers = _dense_stack(inputs, widths)
        layers.append(nn.Linear(widths[-1] if widths else inputs, len(bin_values)))
        super().__init__(*layers)
        self.register_buffer(
            "bin_values", torch.tensor(list(bin_values), dtype=torch.float32), persistent=False
        )


def build_head(config: HeadConfig, inputs: int, index: int) -> nn.Module:
    """The head for one output after an ``inputs``-wide layer (resolves ``quarter`` widths)."""
    widths = config.hidden_widths(inputs)
    if any(width < 1 for width in widths):
        raise ConfigError(
            f"model.heads.{index}.widths: 'quarter' needs an input of at least 64 units, the "
            f"head gets {inputs}; give explicit widths or widen the neck"
        )
    if config.kind == "classification":
        assert config.bins is not None
        return ClassificationHead(inputs, widths, config.bins.values())
    return RegressionHead(inputs, widths)


def logits_to_action(
    logits: torch.Tensor,
    bin_values: torch.Tensor,
    sample: bool = False,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """[B, n_bins] logits -> [B] action values: the argmax bin's value, or a sampled bin's.

    Sampling (kkelchte's ``--stochastic``) draws from the softmax, which keeps a policy from
    locking into one bin when two are nearly tied.
    """
    if sample:
        probabilities = torch.softmax(logits.float(), dim=1)
        index = torch.multinomial(probabilities, 1, generator=generator).squeeze(1)
    else:
        index = logits.argmax(dim=1)
    return bin_values.to(logits.device)[index]


def action_to_bin(
    actions: torch.Tensor, boundaries: Sequence[float] | torch.Tensor
) -> torch.Tensor:
    """Continuous actions [B] -> bin indices [B] (long), for the cross-entropy target.

    ``boundaries`` are the inner bin boundaries (``BinsConfig.boundaries()``); a value exactly
    on a boundary goes to the upper bin.
    """
    edges = torch.as_tensor(boundaries, dtype=actions.dtype, device=actions.device)
    return torch.bucketize(actions, edges, right=True)
