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

class BPTTConfig(_Section):
    """How sequences reach a recurrent policy (kkelchte/pilot's three BPTT modes).

    ``full`` (F-BPTT): whole episodes per batch from a zero state; ``full_policy: cut`` trims
    every episode of a batch to the shortest one (the seed's choice), ``pad`` pads to the longest
    and masks the padding out of the loss. ``window`` (WW-TBPTT): shuffled windows of ``window``
    frames at random episodes and start frames; ``initial_state: warmup`` first runs the network
    without gradient over every ``warmup_every``-th earlier frame of the episode (at most
    ``warmup_frames`` of them; all when unset), ``zero`` starts from zeros. ``sliding`` (S-TBPTT):
    each batch row plays its own episodes in order, every batch moves its window ``step`` frames
    on (default ``window``) and carries the LSTM state over, detached; a row whose episode ends
    starts the next one from zeros. ``accumulate`` (sliding only) sums gradients over a row set's
    windows and updates once when the first row finishes its episode. ``mode: none`` trains on
    single frames. Validation always runs each val episode step by step with carried state.
    """

    mode: Literal["none", "full", "window", "sliding"] = "none"
    window: PositiveInt = 20
    step: PositiveInt | None = None
    initial_state: Literal["zero", "warmup"] = "zero"
    warmup_every: PositiveInt = 1
    warmup_frames: PositiveInt | None = None
    accumulate: bool = False
    full_policy: Literal["cut", "pad"] = "cut"

    @model_validator(mode="after")
    def _options_fit_mode(self) -> BPTTConfig:
        if self.step is not None:
            if self.mode != "sliding":
                raise _field_error("step", f"applies only to mode: sliding (mode is {self.mode!r})")
            if self.step > self.window:
                raise _field_error(
                    "step",
                    f"{self.step} is longer than the window ({self.window}): frames in between "
                    "would never be trained; use step <= window",
                )
        if self.initial_state == "warmup" and self.mode != "window":
            raise _field_error(
                "initial_state", f"'warmup' applies only to mode: window (mode is {self.mode!r})"
            )
        if self.accumulate and self.mode != "sliding":
            raise _field_error("accumulate", f"applies only to mode: sliding (mode is {self.mode!r})")
        return self

    @property
    def stride(self) -> int:
        """Frames a sliding window moves per batch."""
        return self.step if self.step is not None else self.window


#: Short names of train.precision -> Lightning Fabric's names.
PRECISION_SPELLINGS = {
    "32": "32-true", "fp32": "32-true", "64": "64-true", "bf16": "bf16-mixed",
    "16": "16-mixed", "fp16": "16-mixed",
}

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
    #: Fabric's precision, or ``auto``: bf16-mixed where the device computes bf16 natively
    #: (CPUs with AMX or AVX-512 BF16, bf16-capable GPUs), else 32-true; resolved once per run
    #: by `drivelab.train.speed`. Short spellings: 32, 64, bf16, 16 (= 16-mixed).
    precision: Literal[
        "auto", "32-true", "64-true", "16-true", "bf16-true", "16-mixed", "bf16-mixed"
    ] = "32-true"
    #: Conv weights and frames in NHWC (True) or NCHW (False). ``auto``: the faster one for this
    #: backbone, batch shape and precision on this machine, timed once and cached
    #: (`drivelab.train.layout_probe`); NHWC for a conv policy where nothing is timed.
    channels_last: bool | Literal["auto"] = "auto"
    #: torch.compile the policy: costs ~25 s of compilation at the start of every period and
    #: pays only in long runs (benchmarks/trainer.py measures the break-even). ``auto``: on when
    #: the run's work passes the measured break-even (`drivelab.train.speed.auto_compile`).
    compile: bool | Literal["auto"] = "auto"
    #: Sequence training for a recurrent policy (``model.recurrent``); see BPTTConfig.
    bptt: BPTTConfig = Field(default_factory=BPTTConfig)

    @field_validator("optimizer", "schedule", mode="before")
    @classmethod
    def _name_shorthand(cls, value: Any) -> Any:
        return {"name": value} if isinstance(value, str) else value

    @field_validator("precision", mode="before")
    @classmethod
    def _precision_spelling(cls, value: Any) -> Any:
        if isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
        return PRECISION_SPELLINGS.get(value, value) if isinstance(value, str) else value

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


