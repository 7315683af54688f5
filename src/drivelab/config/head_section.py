"""Head configs: what each output of a policy predicts (a value, action bins or class labels)."""

from __future__ import annotations

from itertools import pairwise
from typing import Annotated, Any, Literal

from pydantic import (
    Field,
    NonNegativeFloat,
    PositiveInt,
    field_validator,
    model_validator,
)

from drivelab.config.base import ConfigError, _field_error, _Section

QUARTER = "quarter"
#: Charles's heads: three dense layers, each a quarter of the previous width.
QUARTER_LAYERS = 3


def quarter_widths(input_width: int) -> list[int]:
    """Widths of a ``quarter`` head after an ``input_width`` layer (1024 -> 256, 64, 16)."""
    return [input_width // 4**i for i in range(1, QUARTER_LAYERS + 1)]


# -------------------------------------------------------------------------------------- model



#: Named bin sets from the seeds: kkelchte/pilot's 3 steering bins over +-0.9 and Charles's
#: model_0001 v4/v5 "discrete delta" values (changes of the last action with ``delta: true``).
BIN_PRESETS: dict[str, tuple[float, ...]] = {
    "kkelchte": (-0.9, 0.0, 0.9),
    "charles": (-0.3, -0.1, -0.03, 0.0, 0.03, 0.1, 0.3),
}


class BinsConfig(_Section):
    """Discrete action values of a classification head: give ``centres`` or ``edges``.

    ``centres`` are the values the head can output (kkelchte: -0.9, 0, 0.9); a target belongs to
    the nearest centre. ``edges`` are n+1 increasing boundaries; the bin value is the midpoint.
    A plain list in YAML is read as ``centres``; a name picks a preset from `BIN_PRESETS`
    (``kkelchte``: -0.9, 0, 0.9; ``charles``: Charles's seven "delta" values -0.3 .. 0.3).
    """

    centres: list[float] | None = None
    edges: list[float] | None = None

    @model_validator(mode="before")
    @classmethod
    def _list_means_centres(cls, data: Any) -> Any:
        if isinstance(data, str):
            if data not in BIN_PRESETS:
                raise ValueError(
                    f"unknown bins preset {data!r}; presets: {', '.join(BIN_PRESETS)} "
                    "(or give centres/edges)"
                )
            return {"centres": list(BIN_PRESETS[data])}
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
    ``low``/``high`` are the action's range: classification bins must cover it, unless
    ``delta``: then the bins are changes of the last executed action (Charles model_0001 v4/v5,
    e.g. ``bins: charles``), the target is ``action - last action`` and the driver applies
    ``clip(last action + bin value, low, high)``; it needs telemetry of the same name.
    ``standardize`` (regression): the head learns ``(action - mean) / std`` with the training
    split's statistics (stored in the weights), so outputs of different scales weigh alike in
    the loss; its predictions are de-standardised inside the head, in action units everywhere.
    ``kind: class`` (task ``classification``, e.g. GTSRB) predicts an integer label: one logit
    per class, cross-entropy; ``classes`` defaults to the dataset's ``num_classes`` and is
    written into the run's config.yaml when training starts. ``dropout`` is applied before
    every dense layer of the head (the GTSRB log's baseline: dropout, then one linear layer);
    ``activation`` is the hidden layers' non-linearity.
    """

    output: str
    kind: Literal["regression", "classification", "class"] = "regression"
    standardize: bool = False
    widths: list[PositiveInt] | Literal["quarter"] = QUARTER
    bins: BinsConfig | None = None
    delta: bool = False  # classification: bins are changes of the last executed action (Charles)
    classes: Annotated[int, Field(ge=2)] | None = None
    loss: Literal["mse", "l1", "huber", "ce"] | None = None
    weight: NonNegativeFloat = 1.0
    low: float = -1.0
    high: float = 1.0
    dropout: Annotated[float, Field(ge=0, lt=1)] = 0.0
    activation: Literal["relu", "gelu", "silu", "tanh", "elu", "leaky_relu"] = "relu"

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
        if self.classes is not None and self.kind != "class":
            raise _field_error("classes", "classes apply only to kind: class (bins for actions)")
        if self.kind == "class":
            if self.bins is not None:
                raise _field_error("bins", "a class head predicts labels: use classes, not bins")
            if self.loss is None:
                self.loss = "ce"
            elif self.loss != "ce":
                raise _field_error("loss", f"a class head uses 'ce', got {self.loss!r}")
        elif self.kind == "classification":
            if self.bins is None:
                raise _field_error(
                    "bins", "a classification head needs bins, e.g. bins: [-0.9, 0.0, 0.9]"
                )
            first, last = self.bins.span()
            if not self.delta and (first > self.low or last < self.high):
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
        if self.delta and self.kind != "classification":
            raise _field_error("delta", "delta bins need kind: classification (with bins)")
        if self.standardize and self.kind != "regression":
            raise _field_error("standardize", "only regression heads are standardised")
        if self.kind not in ("classification", "class"):
            if self.loss is None:
                self.loss = "mse"
            elif self.loss == "ce":
                raise _field_error(
                    "loss", "a regression head uses 'mse', 'l1' or 'huber', got 'ce'"
                )
        return self

    @property
    def categorical(self) -> bool:
        """Whether the head outputs logits (action bins or class labels)."""
        return self.kind in ("classification", "class")

    @property
    def predicts_labels(self) -> bool:
        """A ``kind: class`` head: integer labels (GTSRB classes), no action value."""
        return self.kind == "class"

    @property
    def predicts_bins(self) -> bool:
        """A ``kind: classification`` head: logits over bins of a continuous action."""
        return self.kind == "classification"

    @property
    def size(self) -> int:
        """Values per sample this head produces: 1, or one logit per bin (class)."""
        if self.kind == "class":
            if self.classes is None:
                raise ConfigError(
                    f"head {self.output!r} (kind: class): the class count is not known yet; set "
                    "its classes, or take it from a dataset (`summary --dataset DS`; `train` does)"
                )
            return self.classes
        if self.kind == "classification":
            assert self.bins is not None
            return len(self.bins.values())
        return 1

    def hidden_widths(self, input_width: int) -> list[int]:
        """The head's hidden dense widths for a given input width (resolves ``quarter``)."""
        return quarter_widths(input_width) if self.widths == QUARTER else list(self.widths)

    def bin_values(self) -> list[float]:
        """What each logit stands for: a bin's action value, or a class id."""
        if self.kind == "class":
            return [float(i) for i in range(self.size)]
        assert self.bins is not None
        return self.bins.values()

    def bin_boundaries(self) -> list[float]:
        """Inner boundaries mapping a target to its logit index (class ids sit between them)."""
        if self.kind == "class":
            return [i + 0.5 for i in range(self.size - 1)]
        assert self.bins is not None
        return self.bins.boundaries()
