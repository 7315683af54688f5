"""The `data` section: which dataset, and how frames reach the policy."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import (
    NonNegativeInt,
    PositiveInt,
)

from drivelab.config.base import _Section

# --------------------------------------------------------------------------------------- data


class CropConfig(_Section):
    """Pixels cut from each side of the frame before resizing (e.g. the hood or a HUD)."""

    top: NonNegativeInt = 0
    bottom: NonNegativeInt = 0
    left: NonNegativeInt = 0
    right: NonNegativeInt = 0


class DataConfig(_Section):
    """Where the demonstrations live and how frames are turned into model input.

    ``normalization`` follows kkelchte/pilot: ``none`` keeps [0, 1], ``shifted`` maps to
    [-0.5, 0.5], ``scaled`` subtracts the dataset's per-channel mean and divides by its std.
    The policy always sees ``frames`` stacked frames (3 channels each) of ``input_size`` after
    the optional crop, so the model shape follows from this section alone.
    """

    path: Path = Path("datasets/carracing.zarr")
    normalization: Literal["none", "shifted", "scaled"] = "shifted"
    input_size: tuple[PositiveInt, PositiveInt] = (96, 96)
    crop: CropConfig | None = None
    frames: PositiveInt = 1
    workers: NonNegativeInt = 2
    train_split: str = "train"
    val_split: str | None = "val"


