"""Will the policy fit in memory? Estimated before a single weight is allocated.

``data.input_size: [100000, 100000]`` is a typo that PyTorch would turn into a multi-terabyte
allocation (a flattening backbone's first dense layer grows with the pixel count) and a crash
or a frozen machine. The policy is first assembled on PyTorch's ``meta`` device, which records
shapes without storage, so its parameter count is exact and free to get; activations are
estimated from the input size. Training needs the weights about four times over (weights,
gradients, two Adam moments).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from drivelab.config import ConfigError
from drivelab.memory import available_bytes, format_bytes

# Bytes of activations kept for backward per input value (fp32): a conv stack keeps a few
# dozen input-sized maps along its layers. Coarse on purpose: the check catches orders of
# magnitude, not the last gigabyte.
ACTIVATION_FACTOR = 24
TRAINING_COPIES = 4  # weights + gradients + Adam's two moments


def meta_parameter_count(build: Callable[[], nn.Module]) -> int | None:
    """Parameters of the module ``build`` makes, counted on the meta device (None if it can't).

    Some timm models compute Python numbers from tensors while they are built (drop-path
    rates), which the meta device cannot do; those are built for real later anyway and their
    size does not explode with the input size.
    """
    try:
        with torch.device("meta"):
            module = build()
    except ConfigError:
        raise
    except Exception:
        return None
    return sum(p.numel() for p in module.parameters())


def check_fits_memory(
    parameters: int | None, frame_shape: tuple[int, int, int], batch_size: int, backbone: str,
    available: int | None = None,
) -> None:
    """Refuse, with the figures, a policy whose training would not fit in available memory."""
    channels, height, width = frame_shape
    weights = 4 * (parameters or 0)
    activations = 4 * ACTIVATION_FACTOR * batch_size * channels * height * width
    need = TRAINING_COPIES * weights + activations
    have = available_bytes() if available is None else available
    if need > have:
        raise ConfigError(
            f"data.input_size {[height, width]} with backbone {backbone!r} needs about "
            f"{format_bytes(need)} (weights {format_bytes(weights)} x{TRAINING_COPIES} for "
            f"gradients and optimizer state, activations ~{format_bytes(activations)} for a batch "
            f"of {batch_size}), but {format_bytes(have)} is available: use a smaller "
            "data.input_size, a pooling backbone (model.backbone.pool: avg) or a smaller batch"
        )
