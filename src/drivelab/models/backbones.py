"""Frame encoders: one registry for every timm model plus two small built-in networks.

A backbone turns ``frames`` stacked RGB frames ([B, 3k, H, W], model_0006's channel stacking)
into one feature vector per sample and says how long it is (``num_features``), so the neck can
be sized without running it. timm gives the big ImageNet families (Charles's InceptionResNetV2,
kkelchte's resnet18 ...); ``tiny`` (kkelchte/pilot's tiny_net) and ``pilotnet`` (NVIDIA's
PilotNet) are small enough to train on a laptop CPU; ``torchvision:<name>`` adds torchvision's
classification models (AlexNet, SqueezeNet) through the same factory.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, nullcontext
from pathlib import Path
from types import MappingProxyType
from urllib.parse import urlparse

import torch
from torch import nn

from drivelab.backbone_registry import BUILTIN_BACKBONE_NAMES, default_pool, is_torchvision
from drivelab.config import BackboneConfig, ConfigError
from drivelab.models.torchvision_backbone import TorchvisionBackbone

__all__ = [
    "BUILTIN_BACKBONES",
    "FeaturePool",
    "NoFrames",
    "PilotNet",
    "TimmBackbone",
    "TinyNet",
    "TorchvisionBackbone",
    "build_backbone",
    "load_backbone_weights",
]


def _conv_out(size: int, kernel: int, stride: int) -> int:
    """Output length of an unpadded convolution."""
    return (size - kernel) // stride + 1


class FeaturePool(nn.Module):
    """Turn a [B, C, h, w] feature map into [B, F]: flatten (F = C*h*w) or a global pool (F = C).

    Flattening keeps where things are in the image (PilotNet, tiny_net); pooling makes the
    feature length independent of the input size (needed for 270x480 frames).
    """

    def __init__(self, pool: str) -> None:
        super().__init__()
        if pool not in {"flatten", "avg", "max", "avgmax"}:
            raise ConfigError(
                f"model.backbone.pool: {pool!r} is not allowed; expected 'avg', 'max', "
                "'avgmax' or 'flatten'"
            )
        self.pool = pool

    def output_size(self, channels: int, height: int, width: int) -> int:
        """Feature length for a given feature-map shape."""
        return channels * height * width if self.pool == "flatten" else channels

    def forward(self, maps: torch.Tensor) -> torch.Tensor:
        if self.pool == "flatten":
            return maps.flatten(1)
        if self.pool == "avg":
            return maps.mean(dim=(2, 3))
        if self.pool == "max":
            return maps.amax(dim=(2, 3))
        return 0.5 * (maps.mean(dim=(2, 3)) + maps.amax(dim=(2, 3)))

    def extra_repr(self) -> str:
        return self.pool


def _too_small(name: str, input_size: tuple[int, int], minimum: int) -> ConfigError:
    return ConfigError(
        f"data.input_size: {list(input_size)} is too small for backbone {name!r}; "
        f"each side needs at least {minimum} pixels"
    )


class TinyNet(nn.Module):
    """kkelchte/pilot's tiny_net: Conv(3k->10, 6x6, s3) -> Conv(10->20, 3x3, s2) -> FC 1024.

    At 128x128 the flattened map is 20x20x20 = 8000 values, so the FC holds 8.2M of the
    ~8M parameters the pilot spec table lists. The ReLU'd FC output is the feature vector; the
    original's final FC(1024 -> out) is a head here.
    """

    feature_width = 1024

    def __init__(self, in_channels: int, input_size: tuple[int, int], pool: str = "flatten"):
        super().__init__()
        height, width = input_size
        h1, w1 = _conv_out(height, 6, 3), _conv_out(width, 6, 3)
        h2, w2 = _conv_out(h1, 3, 2), _conv_out(w1, 3, 2)
        if min(h2, w2) < 1:
            raise _too_small("tiny", input_size, 12)
        self.conv1 = nn.Conv2d(in_channels, 10, kernel_size=6, stride=3)
        self.act1 = nn.ReLU()
        self.conv2 = nn.Conv2d(10, 20, kernel_size=3, stride=2)
        self.act2 = nn.ReLU()
        self.pool = FeaturePool(pool)
        self.fc = nn.Linear(self.pool.output_size(20, h2, w2), self.feature_width)
        self.act3 = nn.ReLU()
        self.num_features = self.feature_width

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        maps = self.act2(self.conv2(self.act1(self.conv1(frames))))
        return self.act3(self.fc(self.pool(maps)))


class PilotNet(nn.Module):
    """NVIDIA PilotNet's convolutional part (Bojarski et al., 2016).

    Three 5x5 stride-2 convs (24, 36, 48 channels) and two 3x3 convs (64, 64), unpadded, ReLU.
    The paper's 66x200 input gives a 1x18x64 map (1152 features); 96x96 CarRacing frames give
    5x5x64 = 1600. The paper's FC 100-50-10 layers are the neck and heads here.
    """

    def __init__(self, in_channels: int, input_size: tuple[int, int], pool: str = "flatten"):
        super().__init__()
        layers: list[tuple[int, int, int]] = [
            (24, 5, 2),
            (36, 5, 2),
            (48, 5, 2),
            (64, 3, 1),
            (64, 3, 1),
        ]
        height, width = input_size
        channels = in_channels
        for index, (out_channels, kernel, stride) in enumerate(layers, start=1):
            self.add_module(f"conv{index}", nn.Conv2d(channels, out_channels, kernel, stride))
            self.add_module(f"act{index}", nn.ReLU())
            height, width = _conv_out(height, kernel, stride), _conv_out(width, kernel, stride)
            channels = out_channels
        if min(height, width) < 1:
            raise _too_small("pilotnet", input_size, 61)
        self.pool = FeaturePool(pool)
        self.num_features = self.pool.output_size(channels, height, width)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        maps = frames
        for index in range(1, 6):
            maps = getattr(self, f"act{index}")(getattr(self, f"conv{index}")(maps))
        return self.pool(maps)


class NoFrames(nn.Module):
    """No frame path (``name: none``): a policy that drives on its telemetry history alone.

    Charles's RNN-only model (model_0008_v5), whose LSTM model_0009 transferred, saw no frames;
    this keeps that model a `Policy` like any other (same history/neck/heads names, same
    runtime), with a zero-length feature vector instead of a CNN. Frames are still read and
    ignored, so a small ``data.input_size`` keeps that cheap.
    """

    num_features = 0

    def __init__(self, in_channels: int, input_size: tuple[int, int], pool: str = "flatten"):
        super().__init__()

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        return frames.new_zeros(frames.shape[0], 0)


class TimmBackbone(nn.Module):
    """A timm model without its classifier, as a feature extractor.

    The timm model lives in ``body`` with its own parameter names, so a timm state dict (for
    example a hub ``model.safetensors``) loads into it unchanged. Pooling other than
    ``flatten`` is timm's own global pool, so pretrained features match timm's exactly.
    """

    def __init__(
        self, name: str, in_channels: int, input_size: tuple[int, int], pool: str, pretrained: bool
    ) -> None:
        super().__init__()
        import timm

        global_pool = "" if pool == "flatten" else pool
        try:
            with hub_or_cache() if pretrained else nullcontext():
                self.body = timm.create_model(
                    name,
                    pretrained=pretrained,
                    num_classes=0,
                    in_chans=in_channels,
                    global_pool=global_pool,
                )
        except OSError as exc:
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ConfigError(
                f"model.backbone.pretrained: cannot download pretrained weights for {name!r} "
                f"(no network? {reason[:120]}); pass a local .safetensors path instead"
            ) from None
        except (AssertionError, TypeError, ValueError) as exc:
            raise ConfigError(
                f"model.backbone: timm cannot build {name!r} with pool {pool!r} and "
                f"{in_channels} input channels ({str(exc)[:80]}); try pool 'avg'"
            ) from None
        self.flatten = nn.Flatten(1) if pool == "flatten" else nn.Identity()
        if pool == "flatten":
            self.num_features = self._measure_features(in_channels, input_size)
        else:
            self.num_features = int(getattr(self.body, "head_hidden_size", self.body.num_features))

    def _measure_features(self, in_channels: int, input_size: tuple[int, int]) -> int:
        """Flattened feature length depends on the input size: run one blank frame to see it."""
        was_training = self.body.training
        self.body.eval()
        try:
            with torch.no_grad():
                features = self.body(torch.zeros(1, in_channels, *input_size))
        except (AssertionError, RuntimeError, ValueError) as exc:
            raise ConfigError(
                f"data.input_size: timm model {type(self.body).__name__} cannot take "
                f"{list(input_size)} frames ({str(exc)[:80]})"
            ) from None
        finally:
            self.body.train(was_training)
        return int(features.flatten(1).shape[1])

    @property
    def first_conv(self) -> str | None:
        """State-dict key of the input convolution's weight (adapted for stacked frames)."""
        name = getattr(self.body, "pretrained_cfg", {}).get("first_conv")
        return f"{name}.weight" if isinstance(name, str) else None

    @property
    def classifier_prefixes(self) -> tuple[str, ...]:
        """Prefixes of the classifier weights a timm checkpoint carries and we do not use."""
        names = getattr(self.body, "pretrained_cfg", {}).get("classifier") or ()
        names = (names,) if isinstance(names, str) else tuple(names)
        return tuple(f"{n}." for n in names)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        return self.flatten(self.body(frames))


BuiltinFactory = Callable[[int, tuple[int, int], str], nn.Module]

#: Built-in backbones by name (read-only): each takes (in_channels, input_size, pool).
BUILTIN_BACKBONES: Mapping[str, BuiltinFactory] = MappingProxyType(
    {"tiny": TinyNet, "pilotnet": PilotNet, "none": NoFrames}
)
assert tuple(BUILTIN_BACKBONES) == BUILTIN_BACKBONE_NAMES, "the registry's names and factories differ"


@contextmanager
def hub_or_cache() -> Iterator[None]:
    """Use the Hugging Face hub if it answers, else only the local cache: fail in a second.

    Offline, huggingface_hub retries each download for most of a minute with a warning per try;
    a two-second probe first turns that into one quick, clear error (cached weights still load).
    """
    import huggingface_hub.constants as hub

    if hub.is_offline_mode() or _reachable(hub.ENDPOINT):
        yield
        return
    before = hub.HF_HUB_OFFLINE
    hub.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        hub.HF_HUB_OFFLINE = before


def _reachable(endpoint: str, timeout: float = 2.0) -> bool:
    host = urlparse(endpoint).hostname or ""
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False


def build_backbone(config: BackboneConfig, frames: int, input_size: tuple[int, int]) -> nn.Module:
    """Build the configured backbone for ``frames`` stacked RGB frames of ``input_size`` [H, W].

    The returned module maps [B, 3*frames, H, W] to [B, num_features] and has ``num_features``.
    """
    pool = config.pool or default_pool(config.name)
    in_channels = 3 * frames
    if config.name in BUILTIN_BACKBONES:
        if config.pretrained is True:
            raise ConfigError(
                f"model.backbone.pretrained: built-in backbone {config.name!r} has no "
                "downloadable weights; use false or a path to a .safetensors file"
            )
        backbone = BUILTIN_BACKBONES[config.name](in_channels, input_size, pool)
    elif is_torchvision(config.name):
        backbone = TorchvisionBackbone(config.name, in_channels, pool)
    else:
        backbone = TimmBackbone(
            config.name, in_channels, input_size, pool, pretrained=config.pretrained is True
        )
    if isinstance(config.pretrained, Path):
        load_backbone_weights(backbone, config.pretrained)
    return backbone


def load_backbone_weights(backbone: nn.Module, path: Path) -> None:
    """Load a ``.safetensors`` state dict into a backbone, strictly, explaining any mismatch.

    For a timm or torchvision backbone the file may hold the model's own keys (a hub or
    torchvision checkpoint; its classifier weights are dropped since the backbone has none) or
    this wrapper's ``body.`` keys. A 3-channel input convolution is adapted to stacked frames the way timm does it
    (weights repeated and scaled), so ImageNet weights can start a model_0006-style network.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if not path.is_file():
        raise ConfigError(f"model.backbone.pretrained: file not found: {str(path)!r}")
    try:
        weights = load_file(str(path))
    except (SafetensorError, OSError) as exc:
        raise ConfigError(
            f"model.backbone.pretrained: {str(path)!r} is not a readable safetensors file ({exc})"
        ) from None

    target: nn.Module = backbone
    first_conv = "conv1.weight"
    if isinstance(backbone, TimmBackbone | TorchvisionBackbone):
        first_conv = backbone.first_conv or ""
        if not all(key.startswith("body.") for key in weights):
            target = backbone.body
            expected_keys = set(target.state_dict())
            weights = {
                key: value
                for key, value in weights.items()
                if key in expected_keys or not key.startswith(backbone.classifier_prefixes)
            }
        else:
            first_conv = f"body.{first_conv}"

    expected = target.state_dict()
    if first_conv in weights and first_conv in expected:
        weights[first_conv] = _adapt_first_conv(weights[first_conv], expected[first_conv])

    missing = [
        key for key in expected if key not in weights and not key.endswith("num_batches_tracked")
    ]
    unexpected = [key for key in weights if key not in expected]
    wrong_shape = [
        f"{key} file {list(weights[key].shape)} vs model {list(expected[key].shape)}"
        for key in weights
        if key in expected and weights[key].shape != expected[key].shape
    ]
    if missing or unexpected or wrong_shape:
        problems = []
        for label, keys in (
            ("missing", missing),
            ("unexpected", unexpected),
            ("wrong shape", wrong_shape),
        ):
            if keys:
                shown = ", ".join(keys[:3]) + (", ..." if len(keys) > 3 else "")
                problems.append(f"{len(keys)} {label} ({shown})")
        raise ConfigError(
            f"model.backbone.pretrained: {str(path)!r} does not match the backbone: "
            + "; ".join(problems)
        )
    target.load_state_dict(weights, strict=False)


def _adapt_first_conv(weight: torch.Tensor, expected: torch.Tensor) -> torch.Tensor:
    """Repeat a 3-channel input conv over stacked frames (timm's adapt_input_conv)."""
    if weight.ndim != 4 or weight.shape == expected.shape:
        return weight
    if (
        weight.shape[1] != 3
        or weight.shape[0] != expected.shape[0]
        or weight.shape[2:] != expected.shape[2:]
    ):
        return weight
    from timm.models import adapt_input_conv

    return adapt_input_conv(int(expected.shape[1]), weight).to(expected.dtype)
