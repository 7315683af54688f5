"""The `data` section: which dataset, and how frames reach the policy."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    Field,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveInt,
    model_validator,
)

from drivelab.config.base import _field_error, _Section

#: Balancing schemes (`drivelab.order.balance`); `v2` trains with helper models.
BALANCE_SCHEMES = ("none", "v1", "v2", "v3", "v4", "inverse_frequency", "normalized_output")
#: An interval bin ``[lo, hi]`` or an exact-value bin ``x`` (Charles' bin lists).
BinItem = float | tuple[float, float]

# --------------------------------------------------------------------------------------- data


class CropConfig(_Section):
    """Pixels cut from each side of the frame before resizing (e.g. the hood or a HUD)."""

    top: NonNegativeInt = 0
    bottom: NonNegativeInt = 0
    left: NonNegativeInt = 0
    right: NonNegativeInt = 0


class BalanceConfig(_Section):
    """Which frames (or how many of each kind) the trainer sees: Charles' v1-v4 and the field's.

    ``bins`` is a preset (``v2``: 0.1-wide bins plus exact 0 — and the ends of a pedal's range —
    per output; ``v1``: the Charles lists) or, per output, a list of exact values and ``[lo, hi]``
    intervals that must tile the output's range. ``outputs`` defaults to the model's heads.
    ``v2`` and ``v3`` read from per-output buffers of ``buffer_size`` samples (drawn without
    replacement, refilled from each output's balanced stream; training starts when every buffer
    is at least ``start_fill`` full); ``v2`` gives every output its own batch and trains with
    helper models (one forward/backward per output, gradients summed, one step).
    """

    scheme: Literal[BALANCE_SCHEMES] = "none"  # type: ignore[valid-type]
    outputs: list[str] | None = None
    bins: Literal["v1", "v2"] | dict[str, list[BinItem]] = "v2"
    skip_empty: bool = False
    buffer_size: PositiveInt = 4096
    start_fill: Annotated[float, Field(gt=0, le=1)] = 0.9
    power: NonNegativeFloat = 1.0  # inverse_frequency: weight = count^-power
    joint: bool = False  # inverse_frequency over bin combinations instead of per-output product
    cap: Annotated[float, Field(gt=0, le=1)] = 1 / 3  # normalized_output: bin share per batch
    candidates: PositiveInt = 8  # v4: candidates per draw
    rounds: PositiveInt | None = None  # v1: rounds per epoch (default: the rarest combination's count)


class AugmentConfig(_Section):
    """Seeded frame augmentation on uint8 batches in the loader (off unless configured).

    ``flip``: chance of a horizontal mirror, which negates the names in ``flip_negate`` (actions
    or telemetry in the history; ``name[i]`` picks one component, e.g. ``purpose[1]``, the
    bearing). ``translate``: up to that many pixels of horizontal shift, and ``steering +=
    translate_steering * dx`` (dx > 0 moves the picture right), clipped to the action range.
    ``brightness``/``contrast``/``colour``: relative jitter amplitudes; ``noise``: Gaussian pixel
    noise std (0-255 units); ``blur``: chance of a 3x3 box blur.
    """

    flip: Annotated[float, Field(ge=0, le=1)] = 0.0
    flip_negate: list[str] = Field(default_factory=lambda: ["steering", "purpose[1]"])
    brightness: Annotated[float, Field(ge=0, lt=1)] = 0.0
    contrast: Annotated[float, Field(ge=0, lt=1)] = 0.0
    colour: Annotated[float, Field(ge=0, lt=1)] = 0.0
    translate: NonNegativeInt = 0
    translate_steering: float = 0.0
    translate_output: str = "steering"
    noise: NonNegativeFloat = 0.0
    blur: Annotated[float, Field(ge=0, le=1)] = 0.0

    @property
    def active(self) -> bool:
        return any((self.flip, self.brightness, self.contrast, self.colour, self.translate,
                    self.noise, self.blur))


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
    #: ``ram`` decodes the whole train split into memory before training (kkelchte's
    #: ``--load_data_in_ram``), refused with the figures if it does not fit; ``none`` decodes
    #: episodes from Zarr as batches need them (each loader process keeps a 4 GiB LRU).
    cache: Literal["none", "ram"] = "none"
    train_split: str = "train"
    #: Train on the split's first whole episodes (stored order) up to this many frames
    #: (`drivelab.data.loader.first_episodes`): dataset size as a config key, so a sweep can
    #: grid over it. Validation and test splits always stay whole.
    max_frames: PositiveInt | None = None
    val_split: str | None = "val"
    balance: BalanceConfig = Field(default_factory=BalanceConfig)
    augment: AugmentConfig | None = None

    @model_validator(mode="after")
    def _augment_needs_effect(self) -> DataConfig:
        if self.augment is not None and not self.augment.active:
            raise _field_error("augment", "no augmentation is switched on (set e.g. flip: 0.5, "
                               "brightness: 0.2, translate: 4), or drop the section")
        return self


