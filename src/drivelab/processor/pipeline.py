"""The device-side steps: a raw batch (uint8 frames, float history) -> the policy's inputs.

Frames travel as uint8 and become floats on the device, where that work is cheapest: crop,
normalise, resize. History windows are standardised with the training split's statistics. The
trainer, the runtime and offline evaluation build this from the run's `ProcessorState`, so a
policy drives on exactly what it trained on.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from drivelab.processor.state import ProcessorError, ProcessorState

NORMALIZATIONS = ("none", "shifted", "scaled")


def normalize_frames(
    frames: torch.Tensor,
    mode: str,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
) -> torch.Tensor:
    """uint8 [B, 3k, H, W] -> float: `none` [0,1], `shifted` [-0.5,0.5], `scaled` (dataset stats).

    kkelchte's three input normalisations; ``mean``/``std`` are per RGB channel in [0,1] units
    (`data info` reports them) and repeat over the k stacked frames.
    """
    x = frames.float().div_(255.0)
    if mode == "none":
        return x
    if mode == "shifted":
        return x.sub_(0.5)
    if mode == "scaled":
        if mean is None or std is None:
            raise ProcessorError("normalization 'scaled' needs the dataset's frame mean/std")
        reps = x.shape[1] // len(mean)
        m = torch.tensor(list(mean) * reps, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
        s = torch.tensor(list(std) * reps, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
        return x.sub_(m).div_(s)
    raise ProcessorError(f"unknown normalization {mode!r}: use one of {', '.join(NORMALIZATIONS)}")


def to_memory_format(frames: torch.Tensor, channels_last: bool | None) -> torch.Tensor:
    """Frames [B, C, H, W] in the layout the policy's convolutions run in: NHWC (True), NCHW
    (False), or as they came (None: no copy).

    Why False copies: a batch's frames are stored HWC, so the [B, C, H, W] view the loader
    gives is already NHWC in memory, and a convolution runs NHWC when its input is, whatever
    its weights' layout. Without this copy ``channels_last: false`` would still train NHWC.
    """
    if channels_last is None:
        return frames
    if frames.dim() == 4:
        layout = torch.channels_last if channels_last else torch.contiguous_format
        return frames.contiguous(memory_format=layout)
    return frames if channels_last else frames.contiguous()


class InputPipeline:
    """A batch on the device -> the policy's inputs (frames, history).

    Frames: uint8 [B, 3k, H, W] -> crop, normalise, resize, then the trainer's layout
    (``train.channels_last``: NHWC or NCHW; None, for inference, leaves the frames' own).
    History: float [B, T, S] -> standardised.
    """

    def __init__(self, state: ProcessorState, channels_last: bool | None = None) -> None:
        steps = state.frames
        self.channels_last = channels_last
        self.mode = steps.normalization
        self.mean = steps.mean
        self.std = steps.std
        h, w = steps.source_shape[:2]
        crop = steps.crop
        if crop is None:
            self.rows, self.cols = slice(0, h), slice(0, w)
        else:
            self.rows = slice(crop.top, h - crop.bottom)
            self.cols = slice(crop.left, w - crop.right)
        cropped = (self.rows.stop - self.rows.start, self.cols.stop - self.cols.start)
        self.size = tuple(steps.input_size)
        self.resize = cropped != self.size
        self.crop = (h, w) != cropped
        self._h_mean = torch.tensor(list(state.history.mean), dtype=torch.float32)
        self._h_std = torch.tensor(list(state.history.std), dtype=torch.float32)

    def frames(self, frames: torch.Tensor) -> torch.Tensor:
        if self.crop:
            frames = frames[:, :, self.rows, self.cols]
        x = normalize_frames(frames, self.mode, self.mean, self.std)
        if self.resize:
            x = F.interpolate(x, size=self.size, mode="bilinear", align_corners=False, antialias=True)
        return to_memory_format(x, self.channels_last)

    def history(self, history: torch.Tensor | None) -> torch.Tensor | None:
        if history is None or self._h_mean.numel() == 0:
            return history
        if self._h_mean.device != history.device:
            self._h_mean = self._h_mean.to(history.device)
            self._h_std = self._h_std.to(history.device)
        return (history - self._h_mean) / self._h_std

    def __call__(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor | None]:
        return self.frames(batch["frames"]), self.history(batch.get("history"))
