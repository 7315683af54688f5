"""The neck (shared dense layers) and one head per output (regression value or bin logits).

Charles's heads are small dense stacks, each layer a quarter of the previous width, ending in
one linear unit; kkelchte's discrete steering is a classification over three bins whose centre
is the action. Both are here, and the helpers that translate between continuous actions and
bins live next to the head that needs them, so the trainer and the runtime agree on the mapping.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

from drivelab.config import ConfigError, HeadConfig

__all__ = [
    "ClassificationHead",
    "RegressionHead",
    "StandardizedRegressionHead",
    "action_to_bin",
    "build_head",
    "build_neck",
    "logits_to_action",
    "set_target_statistics",
]


#: A head's hidden-layer non-linearity by its config name (`HeadConfig.activation`).
ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU, "gelu": nn.GELU, "silu": nn.SiLU, "tanh": nn.Tanh, "elu": nn.ELU,
    "leaky_relu": nn.LeakyReLU,
}


def _dense_stack(
    inputs: int, widths: Sequence[int], activation: str = "relu", dropout: float = 0.0
) -> list[nn.Module]:
    """Dense layers, each [Dropout] -> Linear -> activation (no Dropout module when 0)."""
    layers: list[nn.Module] = []
    for width in widths:
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        layers += [nn.Linear(inputs, width), ACTIVATIONS[activation]()]
        inputs = width
    return layers


def _output_layer(inputs: int, outputs: int, dropout: float) -> list[nn.Module]:
    """The head's last Linear, after Dropout when configured (the GTSRB log's baseline head)."""
    return ([nn.Dropout(dropout)] if dropout > 0 else []) + [nn.Linear(inputs, outputs)]


def build_neck(inputs: int, widths: Sequence[int]) -> nn.Sequential:
    """Dense ReLU layers over the joined backbone (+ history) features; empty = pass-through."""
    return nn.Sequential(*_dense_stack(inputs, widths))


class RegressionHead(nn.Sequential):
    """Hidden dense ReLU layers, then one linear unit; the output is [B]."""

    def __init__(
        self, inputs: int, widths: Sequence[int], activation: str = "relu", dropout: float = 0.0
    ) -> None:
        layers = _dense_stack(inputs, widths, activation, dropout)
        layers += _output_layer(widths[-1] if widths else inputs, 1, dropout)
        super().__init__(*layers)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return super().forward(features).squeeze(1)


class StandardizedRegressionHead(RegressionHead):
    """A regression head that learns standardised targets and answers in action units.

    The training split's mean and std are persistent buffers, so a checkpoint carries them and
    every consumer (runtime, offline metrics) gets actions without knowing about the scaling;
    the objective divides errors by ``target_std`` so the loss is the standardised one.
    """

    target_mean: torch.Tensor
    target_std: torch.Tensor

    def __init__(
        self, inputs: int, widths: Sequence[int], activation: str = "relu", dropout: float = 0.0
    ) -> None:
        super().__init__(inputs, widths, activation, dropout)
        self.register_buffer("target_mean", torch.zeros(()))
        self.register_buffer("target_std", torch.ones(()))

    def set_target_statistics(self, mean: float, std: float) -> None:
        self.target_mean.fill_(float(mean))
        self.target_std.fill_(max(float(std), 1e-6))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return super().forward(features) * self.target_std + self.target_mean


class ClassificationHead(nn.Sequential):
    """Hidden dense layers, then one logit per bin (or class); the output is [B, n_bins].

    The bin values travel with the head (a non-persistent buffer: on the right device, not in
    checkpoints) so a runtime can turn logits into an action without the config.
    """

    bin_values: torch.Tensor

    def __init__(
        self,
        inputs: int,
        widths: Sequence[int],
        bin_values: Sequence[float],
        activation: str = "relu",
        dropout: float = 0.0,
    ) -> None:
        layers = _dense_stack(inputs, widths, activation, dropout)
        layers += _output_layer(widths[-1] if widths else inputs, len(bin_values), dropout)
        super().__init__(*layers)
        self.register_buffer(
            "bin_values", torch.tensor(list(bin_values), dtype=torch.float32), persistent=False
        )


def set_target_statistics(
    policy: nn.Module, mean: Mapping[str, float], std: Mapping[str, float]
) -> None:
    """Give every standardised head of ``policy`` the training split's action mean/std.

    They live in the heads' buffers, so checkpoints and every consumer carry them; a branched
    head (one stack per command value) gets them in each branch.
    """
    for name, head in getattr(policy, "heads", {}).items():
        for module in head.modules():
            if isinstance(module, StandardizedRegressionHead):
                module.set_target_statistics(mean[name], std[name])


def build_head(config: HeadConfig, inputs: int, index: int) -> nn.Module:
    """The head for one output after an ``inputs``-wide layer (resolves ``quarter`` widths)."""
    widths = config.hidden_widths(inputs)
    if any(width < 1 for width in widths):
        raise ConfigError(
            f"model.heads.{index}.widths: 'quarter' needs an input of at least 64 units, the "
            f"head gets {inputs}; give explicit widths or widen the neck"
        )
    style = {"activation": config.activation, "dropout": config.dropout}
    if config.categorical:  # action bins, or class ids for kind: class
        return ClassificationHead(inputs, widths, config.bin_values(), **style)
    if config.standardize:
        return StandardizedRegressionHead(inputs, widths, **style)
    return RegressionHead(inputs, widths, **style)


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
