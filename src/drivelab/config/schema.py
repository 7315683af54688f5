"""The typed experiment schema: every knob of an experiment, its type, default and checks.

Every knob of an experiment (data, policy architecture, training) is declared here with its type,
its default and its checks, so a bad value is caught when the YAML file is read, not hours into a
run. A mistake surfaces as a single :class:`ConfigError` line that names the key and says what is
allowed, because the person reading it is usually at a terminal with a half-written config open.

The resolved config (every default filled in) is what a run folder stores as ``config.yaml``;
:func:`dump_config` writes it and :func:`load_config` reads it back unchanged.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from itertools import pairwise
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from drivelab.errors import DrivelabError


class ConfigError(DrivelabError):
    """A user mistake in a config file or override; the message is one line naming the key.

    A `DrivelabError` (itself a ValueError), so the command line prints it as one line.
    """


def _field_error(field: str, message: str) -> PydanticCustomError:
    """An error from a model validator, located at one of the model's own fields."""
    return PydanticCustomError("located", "{message}", {"path": [field], "message": message})


PositiveInt = Annotated[int, Field(gt=0)]
NonNegativeInt = Annotated[int, Field(ge=0)]
PositiveFloat = Annotated[float, Field(gt=0)]
NonNegativeFloat = Annotated[float, Field(ge=0)]

#: Families of head widths: an explicit list, or Charles's "each layer a quarter of the previous".
QUARTER = "quarter"
#: Charles's heads: three dense layers, each a quarter of the previous width.
QUARTER_LAYERS = 3


def quarter_widths(input_width: int) -> list[int]:
    """Widths of a ``quarter`` head after an ``input_width`` layer (1024 -> 256, 64, 16)."""
    return [input_width // 4**i for i in range(1, QUARTER_LAYERS + 1)]


class _Section(BaseModel):
    """Base of every config section: unknown keys are errors, with a close-name suggestion.

    ``extra="forbid"`` alone would reject the key; the before-validator runs first so the message
    can say which names exist and which one the user probably meant.
    """

    model_config = ConfigDict(extra="forbid", validate_default=True)

    @model_validator(mode="before")
    @classmethod
    def _reject_unknown_keys(cls, data: Any) -> Any:
        if isinstance(data, Mapping):
            allowed = list(cls.model_fields)
            for key in data:
                if key not in allowed:
                    close = difflib.get_close_matches(str(key), allowed, n=1, cutoff=0.6)
                    raise PydanticCustomError(
                        "unknown_key",
                        "unknown key {key}",
                        {
                            "key": str(key),
                            "allowed": allowed,
                            "suggestion": close[0] if close else "",
                        },
                    )
        return data


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


# -------------------------------------------------------------------------------------- model


class BackboneConfig(_Section):
    """The frame encoder: a timm model by name, or a built-in ``tiny`` / ``pilotnet``.

    ``pretrained`` is ``false`` (random init), ``true`` (timm's hub weights; needs network) or a
    path to a ``.safetensors`` file holding the backbone's state dict. ``pool`` turns the last
    feature map into a vector; it defaults to ``avg`` for timm models (Charles's global average
    pooling) and ``flatten`` for the built-ins (as in their papers).
    """

    name: str = "pilotnet"
    pretrained: bool | Path = False
    pool: Literal["avg", "max", "avgmax", "flatten"] | None = None

    @field_validator("name")
    @classmethod
    def _known_backbone(cls, name: str) -> str:
        from drivelab.models.backbones import backbone_names, is_known_backbone

        if not is_known_backbone(name):
            close = difflib.get_close_matches(name, backbone_names(name), n=3, cutoff=0.6)
            hint = f"did you mean {', '.join(repr(c) for c in close)}? " if close else ""
            raise ValueError(
                f"unknown backbone {name!r}; {hint}expected 'tiny', 'pilotnet' or a timm model "
                "name (see timm.list_models())"
            )
        return name

    @field_validator("pretrained", mode="before")
    @classmethod
    def _pretrained_kind(cls, value: Any) -> bool | Path:
        if isinstance(value, bool):
            return value
        if isinstance(value, str | Path) and str(value):
            return Path(value)
        raise ValueError(f"expected false, true or a path to a .safetensors file, got {value!r}")

    @model_validator(mode="after")
    def _check_pretrained(self) -> BackboneConfig:
        from drivelab.models.backbones import BUILTIN_BACKBONES, timm_has_pretrained

        if self.pretrained is True:
            if self.name in BUILTIN_BACKBONES:
                raise _field_error(
                    "pretrained",
                    f"built-in backbone {self.name!r} has no downloadable weights; use false or "
                    "a path to a .safetensors file",
                )
            if not timm_has_pretrained(self.name):
                raise _field_error(
                    "pretrained",
                    f"timm publishes no pretrained weights for {self.name!r}; use false or a "
                    "path to a .safetensors file",
                )
        elif isinstance(self.pretrained, Path):
            if self.pretrained.suffix != ".safetensors":
                raise _field_error(
                    "pretrained",
                    f"expected a .safetensors file, got {str(self.pretrained)!r}",
                )
            if not self.pretrained.is_file():
                raise _field_error("pretrained", f"file not found: {str(self.pretrained)!r}")
        if self.pool is None:
            from drivelab.models.backbones import default_pool

            self.pool = default_pool(self.name)
        return self


class BinsConfig(_Section):
    """Discrete action values of a classification head: give ``centres`` or ``edges``.

    ``centres`` are the values the head can output (kkelchte: -0.9, 0, 0.9); a target belongs to
    the nearest centre. ``edges`` are n+1 increasing boundaries; the bin value is the midpoint.
    A plain list in YAML is read as ``centres``.
    """

    centres: list[float] | None = None
    edges: list[float] | None = None

    @model_validator(mode="before")
    @classmethod
    def _list_means_centres(cls, data: Any) -> Any:
        if isinstance(data, list | tuple):
            return {"centres": list(data)}
        return data

    @model_validator(mode="after")
    def _one_increasing_list(self) -> BinsConfig:
        if (self.centres is None) == (self.edges is None):
            raise ValueError("give exactly one of 'centres' or 'edges'")
        values = self.centres if self.centres is not None else self.edges
        assert values is not None
        kind = "centres" if self.centres is not None else "edges"
        minimum = 2 if kind == "centres" else 3
        if len(values) < minimum:
            raise _field_error(kind, f"need at least {minimum} values for 2 bins, got {values}")
        if any(b <= a for a, b in pairwise(values)):
            raise _field_error(kind, f"values must be strictly increasing, got {values}")
        return self

    def values(self) -> list[float]:
        """The action value each bin stands for (what argmax maps back to)."""
        if self.centres is not None:
            return list(self.centres)
        assert self.edges is not None
        return [(a + b) / 2 for a, b in pairwise(self.edges)]

    def boundaries(self) -> list[float]:
        """The n-1 inner boundaries between bins, for mapping a continuous target to a bin."""
        if self.edges is not None:
            return list(self.edges[1:-1])
        centres = self.values()
        return [(a + b) / 2 for a, b in pairwise(centres)]

    def span(self) -> tuple[float, float]:
        """The range of actions the bins represent."""
        values = self.centres if self.centres is not None else self.edges
        assert values is not None
        return values[0], values[-1]


class HeadConfig(_Section):
    """One output of the policy (an action such as ``steering``) and how it is learned.

    ``widths`` are the hidden dense layers of the head (ReLU); ``quarter`` is Charles's rule of
    three layers each a quarter of the previous width (1024 -> 256, 64, 16), then the output.
    ``low``/``high`` are the action's range: classification bins must cover it.
    """

    output: str
    kind: Literal["regression", "classification"] = "regression"
    widths: list[PositiveInt] | Literal["quarter"] = QUARTER
    bins: BinsConfig | None = None
    loss: Literal["mse", "l1", "huber", "ce"] | None = None
    weight: NonNegativeFloat = 1.0
    low: float = -1.0
    high: float = 1.0

    @field_validator("widths", mode="before")
    @classmethod
    def _widths_kind(cls, value: Any) -> Any:
        if isinstance(value, str):
            if value != QUARTER:
                raise ValueError(f"expected a list of positive ints or 'quarter', got {value!r}")
            return value
        if not isinstance(value, list | tuple) or not all(
            isinstance(w, int) and not isinstance(w, bool) and w > 0 for w in value
        ):
            raise ValueError(f"expected a list of positive ints or 'quarter', got {value!r}")
        return list(value)

    @model_validator(mode="after")
    def _consistent(self) -> HeadConfig:
        if self.low >= self.high:
            raise _field_error("high", f"must be above low={self.low}, got {self.high}")
        if self.kind == "classification":
            if self.bins is None:
                raise _field_error(
                    "bins", "a classification head needs bins, e.g. bins: [-0.9, 0.0, 0.9]"
                )
            first, last = self.bins.span()
            if first > self.low or last < self.high:
                raise _field_error(
                    "bins",
                    f"bins span [{first}, {last}] but must cover the range of {self.output!r} "
                    f"[{self.low}, {self.high}]; widen the bins or set low/high",
                )
            if self.loss is None:
                self.loss = "ce"
            elif self.loss != "ce":
                raise _field_error("loss", f"a classification head uses 'ce', got {self.loss!r}")
        else:
            if self.bins is not None:
                raise _field_error("bins", "bins apply only to kind: classification")
            if self.loss is None:
                self.loss = "mse"
            elif self.loss == "ce":
                raise _field_error(
                    "loss", "a regression head uses 'mse', 'l1' or 'huber', got 'ce'"
                )
        return self

    @property
    def size(self) -> int:
        """Values per sample this head produces: 1, or one logit per bin."""
        if self.kind == "classification":
            assert self.bins is not None
            return len(self.bins.values())
        return 1

    def hidden_widths(self, input_width: int) -> list[int]:
        """The head's hidden dense widths for a given input width (resolves ``quarter``)."""
        return quarter_widths(input_width) if self.widths == QUARTER else list(self.widths)


class HistoryConfig(_Section):
    """The telemetry-history branch: the last ``length`` steps of named signals.

    ``kind: lstm`` stacks ``layers`` LSTMs of ``width`` and keeps the last layer's final hidden
    state (Charles model_0008_v7's "thought vector"); ``kind: dense`` flattens the window into
    ``layers`` dense layers (model_0007). ``output: prediction`` makes the branch predict every
    head's output itself and passes those values on instead (model_0008 v1-v5: it invites the
    model to repeat the last action). ``aux_weight > 0`` adds auxiliary heads on the branch alone
    (returned as ``aux/<output>``) weighted in the loss; model_0008_v4 used 0.25.
    Signals have one value per step unless ``signal_sizes`` says otherwise (``purpose: 2``).
    """

    signals: list[str] = Field(min_length=1)
    signal_sizes: dict[str, PositiveInt] = Field(default_factory=dict)
    length: PositiveInt = 60
    kind: Literal["dense", "lstm"] = "lstm"
    layers: PositiveInt = 2
    width: PositiveInt = 128
    output: Literal["thought", "prediction"] = "thought"
    aux_weight: NonNegativeFloat = 0.0

    @model_validator(mode="after")
    def _signals_known(self) -> HistoryConfig:
        duplicates = sorted({s for s in self.signals if self.signals.count(s) > 1})
        if duplicates:
            raise _field_error("signals", f"listed more than once: {', '.join(duplicates)}")
        stray = [name for name in self.signal_sizes if name not in self.signals]
        if stray:
            raise _field_error(
                "signal_sizes",
                f"{', '.join(stray)} not in signals {self.signals}",
            )
        return self

    def signal_size(self, name: str) -> int:
        """Values per step of one signal."""
        return self.signal_sizes.get(name, 1)

    @property
    def step_size(self) -> int:
        """Values per step of all signals together (S in the [B, T, S] history input)."""
        return sum(self.signal_size(name) for name in self.signals)


def _default_heads() -> list[HeadConfig]:
    return [HeadConfig(output="steering"), HeadConfig(output="accel_brake")]


class ModelConfig(_Section):
    """The policy: backbone (+ optional history branch) -> neck -> one head per output."""

    backbone: BackboneConfig = Field(default_factory=BackboneConfig)
    history: HistoryConfig | None = None
    neck: list[PositiveInt] = Field(default_factory=lambda: [256])
    heads: list[HeadConfig] = Field(default_factory=_default_heads, min_length=1)

    @model_validator(mode="after")
    def _heads_fit(self) -> ModelConfig:
        outputs = [head.output for head in self.heads]
        duplicates = sorted({o for o in outputs if outputs.count(o) > 1})
        if duplicates:
            raise _field_error("heads", f"more than one head for output {', '.join(duplicates)}")
        if self.neck:
            for index, head in enumerate(self.heads):
                if head.widths == QUARTER and min(quarter_widths(self.neck[-1])) < 1:
                    raise PydanticCustomError(
                        "located",
                        "{message}",
                        {
                            "path": ["heads", index, "widths"],
                            "message": f"'quarter' needs an input of at least 64 units; the neck "
                            f"ends at {self.neck[-1]}",
                        },
                    )
        return self

    @property
    def outputs(self) -> list[str]:
        """The head (output) names in config order."""
        return [head.output for head in self.heads]


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


# ---------------------------------------------------------------------------------------- root


class ExperimentConfig(_Section):
    """One experiment: which model line it belongs to, its data, its policy and its training."""

    line: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")]
    seed: int = 123
    notes: str = ""
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)

    @property
    def frame_shape(self) -> tuple[int, int, int]:
        """The policy's frame input [C, H, W]: stacked frames after crop and resize."""
        height, width = self.data.input_size
        return 3 * self.data.frames, height, width

