"""The convcam: the backbone's last feature maps as a heat map beside the frame while a policy drives.

Charles watched his networks drive with the last convolutional layer's activations next to the
camera image: a map that lights up on the road edge shows what the steering reacts to, one that
stays dark or flickers randomly says the backbone learned little. This module finds that layer
in any backbone (timm, ``tiny``, ``pilotnet``), keeps the current step's map through a forward
hook, and renders it as a heat map over the frame (or, for a close look, as labelled-free tiles:
`tile_feature_maps`) for `OverlayVideo`'s ``side`` slot.

Which module is "the last feature map" is decided by running one blank frame through the
backbone and watching every module finish: the last one to return a 4-D tensor with more than
one pixel wins. That is the ReLU after PilotNet's conv5, timm's last stage (after its
activation) for a pooled backbone, and timm's whole body for a ``flatten`` one; a model whose
head convolves an already pooled 1x1 map (MobileNetV3) still gets its last spatial stage.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import torch
from PIL import Image
from torch import nn

from drivelab.errors import DrivelabError

__all__ = ["ConvCam", "ConvcamError", "find_feature_map", "heat_map_over", "tile_feature_maps"]

#: Channels drawn at most: 64 tiles of a 5x5 PilotNet map fit in an 8x8 grid; a 2048-channel
#: timm stage would shrink every tile to a speck.
MAX_CHANNELS = 64


class ConvcamError(DrivelabError):
    """A backbone without a spatial feature map to show (e.g. a vision transformer's tokens)."""


def find_feature_map(backbone: nn.Module, input_shape: tuple[int, int, int]) -> tuple[str, tuple[int, ...]]:
    """(module name, [C, h, w]) of the last module in ``backbone`` that yields a spatial map.

    The order modules *finish* in during a real forward pass is the only reliable notion of
    "last": registration order lies for models that build their head before their body, and a
    container (a timm stage) finishes after its children, so the stage's output (after its last
    activation) is preferred over the bare convolution inside it. ``input_shape`` is one sample
    [3k, H, W] as the policy sees it.
    """
    finished: list[tuple[str, tuple[int, ...]]] = []
    handles = []
    for name, module in backbone.named_modules():

        def record(_module: nn.Module, _inputs: object, output: object, name: str = name) -> None:
            if isinstance(output, torch.Tensor) and output.ndim == 4:
                finished.append((name, tuple(output.shape[1:])))

        handles.append(module.register_forward_hook(record))
    was_training = backbone.training
    backbone.eval()
    try:
        with torch.inference_mode():
            backbone(torch.zeros(1, *input_shape))
    finally:
        backbone.train(was_training)
        for handle in handles:
            handle.remove()
    spatial = [(n, s) for n, s in finished if s[1] * s[2] > 1]
    chosen = spatial or finished
    if not chosen:
        raise ConvcamError(
            f"--convcam: backbone {type(backbone).__name__} produces no [C, h, w] feature map "
            "(a transformer's tokens are not one): drop --convcam for this run"
        )
    return chosen[-1]


class ConvCam:
    """A forward hook on a backbone's last feature map, rendered on demand as a tiled image.

    The hook copies only the first sample's first ``max_channels`` channels, so it costs a small
    memcpy per step; tiling happens only when a video frame asks for it (`image`).
    """

    def __init__(
        self,
        backbone: nn.Module,
        input_shape: tuple[int, int, int],
        max_channels: int = MAX_CHANNELS,
    ) -> None:
        self.module_name, self.map_shape = find_feature_map(backbone, input_shape)
        self.max_channels = max_channels
        self._latest: torch.Tensor | None = None
        module = backbone.get_submodule(self.module_name) if self.module_name else backbone
        self._handle = module.register_forward_hook(self._capture)

    def _capture(self, _module: nn.Module, _inputs: object, output: object) -> None:
        if isinstance(output, torch.Tensor) and output.ndim == 4:
            # a copy: an in-place op later in the network must not change what we show
            self._latest = output[0, : self.max_channels].detach().float().cpu().clone()

    def reset(self) -> None:
        """Forget the last map, so a new episode never shows the previous one's last step."""
        self._latest = None

    def image(self, height: int) -> np.ndarray | None:
        """The last step's maps tiled as uint8 [height, W, 3], or None before the first step."""
        if self._latest is None:
            return None
        return tile_feature_maps(self._latest.numpy(), height)

    def heat_map(self, frame: np.ndarray) -> np.ndarray | None:
        """The last step's maps as a heat map over ``frame`` (None before the first step)."""
        if self._latest is None:
            return None
        return heat_map_over(self._latest.numpy(), frame)

    @property
    def label(self) -> str:
        return f"convcam: mean |activation| of {self.module_name or 'the backbone'}"

    def close(self) -> None:
        """Remove the hook: the policy runs as if the convcam was never attached."""
        self._handle.remove()


def tile_feature_maps(maps: np.ndarray, height: int, max_channels: int = MAX_CHANNELS) -> np.ndarray:
    """[C, h, w] activations -> one uint8 RGB image of ``height`` rows (width keeps the aspect).

    Each channel is min-max normalised on its own (a channel's absolute scale says little and
    would leave most tiles black next to one bright one), coloured with inferno (dark = quiet,
    yellow = firing) and placed in a near-square grid with 1-pixel dark gaps. A constant channel
    (dead ReLU) stays black. Nearest-neighbour upscaling keeps the cells of a 5x5 map visible.
    """
    maps = np.asarray(maps, np.float32)[:max_channels]
    count, h, w = maps.shape
    low = maps.min(axis=(1, 2), keepdims=True)
    span = maps.max(axis=(1, 2), keepdims=True) - low
    scaled = np.where(span > 1e-12, (maps - low) / np.maximum(span, 1e-12), 0.0)
    levels = np.clip(scaled * 255.0 + 0.5, 0, 255).astype(np.uint8)
    cols = math.ceil(math.sqrt(count))
    rows = math.ceil(count / cols)
    grid = np.zeros((rows * (h + 1) - 1, cols * (w + 1) - 1), np.uint8)
    mask = np.zeros_like(grid, dtype=bool)
    for index in range(count):
        r, c = divmod(index, cols)
        y, x = r * (h + 1), c * (w + 1)
        grid[y : y + h, x : x + w] = levels[index]
        mask[y : y + h, x : x + w] = True
    rgb = _inferno()[grid]
    rgb[~mask] = (24, 24, 24)  # the video's background colour: gaps read as gaps, not as zeros
    width = max(1, round(rgb.shape[1] * height / rgb.shape[0]))
    return np.asarray(Image.fromarray(rgb).resize((width, height), Image.NEAREST))


def heat_map_over(maps: np.ndarray, frame: np.ndarray, alpha: float = 0.6) -> np.ndarray:
    """[C, h, w] activations -> one heat map blended over ``frame`` (uint8 [H, W, 3]).

    64 separate tiles of a 5x5 map told a viewer little; where the network looks reads better
    as one map: the mean absolute activation over the channels, min-max normalised, upsampled
    bilinearly to the frame, coloured with inferno and laid over a grey copy of the frame (so the
    road stays recognisable under it). A constant map (nothing fires) shows the grey frame.
    """
    mean = np.abs(np.asarray(maps, np.float32)).mean(axis=0)
    span = float(mean.max() - mean.min())
    scaled = (mean - mean.min()) / span if span > 1e-12 else np.zeros_like(mean)
    height, width = frame.shape[:2]
    levels = np.asarray(Image.fromarray(np.clip(scaled * 255.0 + 0.5, 0, 255).astype(np.uint8))
                        .resize((width, height), Image.BILINEAR))
    grey = np.repeat(np.asarray(frame, np.float32).mean(axis=2, keepdims=True), 3, axis=2)
    weight = alpha * (levels[..., None].astype(np.float32) / 255.0)
    blended = grey * (1.0 - weight) + _inferno()[levels].astype(np.float32) * weight
    return np.clip(blended + 0.5, 0, 255).astype(np.uint8)


@lru_cache(maxsize=1)
def _inferno() -> np.ndarray:
    """The inferno colour map as a [256, 3] uint8 lookup table (built once per process)."""
    from matplotlib import colormaps

    return (colormaps["inferno"](np.arange(256))[:, :3] * 255.0 + 0.5).astype(np.uint8)
