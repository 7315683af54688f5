"""The `train` section: optimiser, schedule, length, cadence, devices."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    Field,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from drivelab.config.base import _field_error, _Section

# -------------------------------------------------------------------------------------- train


class SGDConfig(_Section):
    """Plain SGD (kkelchte/pilot's optimizer), optionally with (Nesterov) momentum."""

    name: Literal["sgd"] = "sgd"
    momentum: Annotated[float, Field(ge=0, lt=1)] = 0.9
    nesterov: bool = False

    @model_validator(mode="after")
    def _nesterov_needs_momentum(self) -> SGDConfig:
        if self.nesterov and self.momentum == 0:
            raise _field_error("nesterov", "Nesterov momentum needs momentum > 0")
        return self


class AdamConfig(_Section):
    """Adam; weight decay is added to the gradient (L2), as torch.optim.Adam does."""

    name: Literal["adam"] = "adam"
    betas: tuple[Annotated[float, Field(ge=0, lt=1)], Annotated[float, Field(ge=0, lt=1)]] = (
        0.9,
        0.999,
    )
    eps: PositiveFloat = 1e-8


class AdamWConfig(_Section):
    """AdamW: decoupled weight decay."""

    name: Literal["adamw"] = "adamw"
    betas: tuple[Annotated[float, Field(ge=0, lt=1)], Annotated[float, Field(ge=0, lt=1)]] = (
        0.9,
        0.999,
    )
    eps: PositiveFloat = 1e-8


class AdadeltaConfig(_Section):
    """Adadelta (an option in kkelchte/pilot)."""

    name: Literal["adadelta"] = "adadelta"
    rho: Annotated[float, Field(gt=0, lt=1)] = 0.9
    eps: PositiveFloat = 1e-6


OptimizerConfig = Annotated[
    SGDConfig | AdamConfig | AdamWConfig | AdadeltaConfig, Field(discriminator="name")
]


class ConstantScheduleConfig(_Section):
    """Keep the learning rate (after warmup) fixed, as Charles did."""

    name: Literal["constant"] = "constant"


class StepScheduleConfig(_Section):
    """Multiply the learning rate by ``gamma`` every ``every`` batches."""

    name: Literal["step"] = "step"
    every: PositiveInt = 10_000
    gamma: Annotated[float, Field(gt=0, le=1)] = 0.1


class CosineScheduleConfig(_Section):
    """Cosine decay from ``lr`` to ``min_lr`` over the training length."""

    name: Literal["cosine"] = "cosine"
    min_lr: NonNegativeFloat = 0.0


ScheduleConfig = Annotated[
    ConstantScheduleConfig | StepScheduleConfig | CosineScheduleConfig,
    Field(discriminator="name"),
]

#: Training length when neither ``max_batches`` nor ``epochs`` is given.
DEFAULT_MAX_BATCHES = 10_000


class TrainConfig(_Section):
    """Optimisation and the hardware it runs on (Lightning Fabric's names for the latter).

    Counting is in batches, like the seeds' logs and checkpoint references (``@27500``).
    ``optimizer`` and ``schedule`` also accept just a name (``optimizer: sgd``).
    """

    optimizer: OptimizerConfig = Field(default_factory=AdamConfig)
    lr: PositiveFloat = 1e-3
    weight_decay: NonNegativeFloat = 0.0
    grad_clip: PositiveFloat | None = 1.0
    warmup_batches: NonNegativeInt = 0
    schedule: ScheduleConfig = Field(default_factory=ConstantScheduleConfig)
    batch_size: PositiveInt = 32
    max_batches: PositiveInt | None = None
    epochs: PositiveInt | None = None
    val_every: PositiveInt | None = 1000
    checkpoint_every: PositiveInt = 1000
    log_every: PositiveInt = 50
    devices: int | Literal["auto"] | list[NonNegativeInt] = 1
    strategy: Literal[
        "auto",
        "single_device",
        "ddp",
        "ddp_spawn",
        "ddp_fork",
        "ddp_find_unused_parameters_true",
        "dp",
        "fsdp",
        "deepspeed",
    ] = "auto"
    accelerator: Literal["auto", "cpu", "cuda", "gpu", "mps", "tpu"] = "auto"
    precision: Literal["32-true", "64-true", "16-true", "bf16-true", "16-mixed", "bf16-mixed"] = (
        "32-true"
    )

    @field_validator("optimizer", "schedule", mode="before")
    @classmethod
    def _name_shorthand(cls, value: Any) -> Any:
        return {"name": value} if isinstance(value, str) else value

    @field_validator("devices", mode="before")
    @classmethod
    def _devices_kind(cls, value: Any) -> Any:
        if value == "auto" or (
            isinstance(value, int) and not isinstance(value, bool) and value > 0
        ):
            return value
        if (
            isinstance(value, list)
            and value
            and all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value)
        ):
            return value
        raise ValueError(
            f"expected a device count > 0, 'auto' or a list of device indices, got {value!r}"
        )

    @model_validator(mode="after")
    def _length_and_schedule(self) -> TrainConfig:
        if self.max_batches is not None and self.epochs is not None:
            raise _field_error("epochs", "set only one of max_batches or epochs")
        if self.max_batches is None and self.epochs is None:
            self.max_batches = DEFAULT_MAX_BATCHES
        if isinstance(self.schedule, CosineScheduleConfig) and self.schedule.min_lr >= self.lr:
            raise PydanticCustomError(
                "located",
                "{message}",
                {
                    "path": ["schedule", "min_lr"],
                    "message": f"must be below lr={self.lr}, got {self.schedule.min_lr}",
                },
            )
        return self


