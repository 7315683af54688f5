"""The `model` section: backbone, history branch, neck and heads."""

from __future__ import annotations

import difflib
from itertools import pairwise
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    Field,
    NonNegativeFloat,
    PositiveInt,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from drivelab.config.base import _field_error, _Section

QUARTER = "quarter"
#: Charles's heads: three dense layers, each a quarter of the previous width.
QUARTER_LAYERS = 3


def quarter_widths(input_width: int) -> list[int]:
    """Widths of a ``quarter`` head after an ``input_width`` layer (1024 -> 256, 64, 16)."""
    return [input_width // 4**i for i in range(1, QUARTER_LAYERS + 1)]


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


