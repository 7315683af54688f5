"""torchvision classification models as frame encoders (``torchvision:alexnet``).

timm has no AlexNet or SqueezeNet, yet kkelchte's spec table compares both; torchvision has
them (and is a drivelab dependency already). The model keeps everything up to its last
classification layer, which becomes an identity: the torchvision fine-tuning recipe
(``model.fc = nn.Identity()``) and what kkelchte/pilot did ("a new last layer"), with the
policy's neck and heads as that new layer. AlexNet therefore keeps its two 4096-unit fully
connected layers, as timm keeps VGG's ``pre_logits``.
"""

from __future__ import annotations

import warnings

import torch
from torch import nn

from drivelab.backbone_registry import torchvision_arch
from drivelab.config import ConfigError

__all__ = ["TorchvisionBackbone"]

#: Classes of the ImageNet classifier torchvision builds by default: its last layer is found by
#: this output size.
IMAGENET_CLASSES = 1000
#: Models with auxiliary classifiers (built without them) and those classifiers' key prefixes.
AUX_CLASSIFIERS: dict[str, tuple[str, ...]] = {
    "inception_v3": ("AuxLogits.",),
    "googlenet": ("aux1.", "aux2."),
}


def _classifier_layer(body: nn.Module) -> tuple[str, int]:
    """(name, input width) of the model's last layer with 1000 outputs: the classifier.

    A ``Linear`` in most models; SqueezeNet classifies with a 1x1 ``Conv2d`` before its pool.
    """
    found: tuple[str, int] | None = None
    for name, module in body.named_modules():
        if isinstance(module, nn.Linear) and module.out_features == IMAGENET_CLASSES:
            found = (name, module.in_features)
        elif isinstance(module, nn.Conv2d) and module.out_channels == IMAGENET_CLASSES:
            found = (name, module.in_channels)
    if found is None:
        raise ConfigError(
            f"model.backbone: torchvision model {type(body).__name__} has no "
            f"{IMAGENET_CLASSES}-class classifier layer to remove; choose another model"
        )
    return found


def _input_conv(body: nn.Module) -> tuple[str, nn.Conv2d]:
    """The first convolution (the one that reads the RGB frames)."""
    for name, module in body.named_modules():
        if isinstance(module, nn.Conv2d):
            return name, module
    raise ConfigError(f"model.backbone: torchvision model {type(body).__name__} has no convolution")


def _widen_input_conv(conv: nn.Conv2d, in_channels: int) -> nn.Conv2d:
    """The same convolution reading ``in_channels`` stacked channels, its init repeated over them
    (timm's adapt_input_conv), so a stacked-frame model starts from the model's own init."""
    from timm.models import adapt_input_conv

    wide = nn.Conv2d(
        in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
        conv.dilation, conv.groups, bias=conv.bias is not None, padding_mode=conv.padding_mode,
    )
    wide.weight.data.copy_(adapt_input_conv(in_channels, conv.weight.data))
    if conv.bias is not None:
        wide.bias.data.copy_(conv.bias.data)
    return wide


class TorchvisionBackbone(nn.Module):
    """A torchvision classification model without its last layer, as a feature extractor.

    The model lives in ``body`` under torchvision's own parameter names, so a torchvision
    state dict (saved as ``.safetensors``) loads into it unchanged: its classifier and
    auxiliary-classifier keys (``classifier_prefixes``) are dropped, and a 3-channel input
    convolution (``first_conv``) is adapted to stacked frames.
    """

    def __init__(self, name: str, in_channels: int, pool: str) -> None:
        super().__init__()
        import torchvision.models

        if pool != "avg":
            raise ConfigError(
                f"model.backbone.pool: torchvision backbone {name!r} keeps the model's own "
                f"pooling; use 'avg' (got {pool!r})"
            )
        arch = torchvision_arch(name)
        options = {"aux_logits": False, "init_weights": True} if arch in AUX_CLASSIFIERS else {}
        with warnings.catch_warnings():  # torchvision's notes on its future default init
            warnings.simplefilter("ignore", FutureWarning)
            self.body = torchvision.models.get_model(arch, weights=None, **options)
        classifier, self.num_features = _classifier_layer(self.body)
        self.body.set_submodule(classifier, nn.Identity())
        self._prefixes = (f"{classifier}.", *AUX_CLASSIFIERS.get(arch, ()))
        conv_name, conv = _input_conv(self.body)
        if conv.in_channels != in_channels:
            self.body.set_submodule(conv_name, _widen_input_conv(conv, in_channels))
        self._first_conv = f"{conv_name}.weight"

    @property
    def first_conv(self) -> str | None:
        """State-dict key (within ``body``) of the input convolution's weight."""
        return self._first_conv

    @property
    def classifier_prefixes(self) -> tuple[str, ...]:
        """Key prefixes a torchvision checkpoint carries that this backbone has no place for."""
        return self._prefixes

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        return self.body(frames)
