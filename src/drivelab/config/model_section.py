"""The `model` section: backbone, history branch, neck and heads."""

from __future__ import annotations

import difflib
from itertools import pairwise
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    Field,
    NonNegativeFloat,
    PositiveFloat,
    PositiveInt,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from drivelab.config.base import ConfigError, _field_error, _Section

QUARTER = "quarter"
#: Charles's heads: three dense layers, each a quarter of the previous width.
QUARTER_LAYERS = 3


def quarter_widths(input_width: int) -> list[int]:
    """Widths of a ``quarter`` head after an ``input_width`` layer (1024 -> 256, 64, 16)."""
    return [input_width // 4**i for i in range(1, QUARTER_LAYERS + 1)]


# -------------------------------------------------------------------------------------- model


class BackboneConfig(_Section):
    """The frame encoder: a timm model by name, or a built-in ``tiny`` / ``pilotnet``.

    ``none`` reads no frames at all (a history-only policy, Charles's RNN-only model_0008_v5).

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
                f"unknown backbone {name!r}; {hint}expected 'tiny', 'pilotnet', 'none' or a timm "
                "model name (see timm.list_models())"
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


#: Named bin sets from the seeds: kkelchte/pilot's 3 steering bins over +-0.9 and Charles's
#: model_0001 v4/v5 "discrete delta" values (used here as plain bin values, not as changes).
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


class InitFromConfig(_Section):
    """One source of initial weights for a new run (transfer learning, Charles's model_0009).

    ``source`` is a checkpoint reference (``runs/<line>/<line>_vN@BATCH``, ``<line>_vN@BATCH``
    under the runs root, or a run without ``@`` for its latest checkpoint), a ``.safetensors``
    file, or ``timm:<name>`` for timm's pretrained weights (needs network). ``modules`` are
    globs over the *policy's* state-dict names (``backbone.*``, ``history.encoder.*``; a bare
    module name such as ``backbone`` means everything under it). ``rename`` maps source-key
    *prefixes* to policy-key prefixes (``{"": "backbone.body."}`` puts timm weights under the
    backbone); the longest matching prefix wins. With ``strict`` (default) any selected tensor
    missing from the source or of another shape is an error; ``strict: false`` reports them
    and keeps their fresh init. Sources are only read when a run starts, never on resume.
    """

    source: str = Field(min_length=1)
    modules: list[str] = Field(default_factory=lambda: ["*"], min_length=1)
    rename: dict[str, str] = Field(default_factory=dict)
    strict: bool = True

    @field_validator("modules")
    @classmethod
    def _globs_not_blank(cls, globs: list[str]) -> list[str]:
        if any(not glob.strip() for glob in globs):
            raise ValueError("module globs must not be empty, e.g. 'backbone.*'")
        return globs


class RecurrentConfig(_Section):
    """An LSTM stack between the per-frame features and the heads (kkelchte's tiny_LSTM_net).

    The backbone (``model.backbone``) encodes every frame of a sequence; the features (joined
    with the history branch, through the neck) feed ``layers`` stacked LSTMs of ``hidden`` units,
    and every head reads the top layer's output at every step. Training needs sequences:
    set ``train.bptt.mode`` to ``full``, ``window`` or ``sliding``.
    """

    layers: PositiveInt = 2
    hidden: PositiveInt = 64


def _default_heads() -> list[HeadConfig]:
    return [HeadConfig(output="steering"), HeadConfig(output="accel_brake")]


class ModelConfig(_Section):
    """The policy: backbone (+ optional history branch) -> neck -> one head per output."""

    backbone: BackboneConfig = Field(default_factory=BackboneConfig)
    history: HistoryConfig | None = None
    neck: list[PositiveInt] = Field(default_factory=lambda: [256])
    heads: list[HeadConfig] = Field(default_factory=_default_heads, min_length=1)
    #: Per-frame backbone -> LSTM stack -> heads at every step (see RecurrentConfig).
    recurrent: RecurrentConfig | None = None
    #: Transfer learning: weights copied into a *new* run's fresh policy (see InitFromConfig).
    init_from: list[InitFromConfig] = Field(default_factory=list)
    #: Globs over parameter names (``backbone.*``) kept fixed; their BatchNorm layers stay in
    #: eval mode. ``unfreeze_at`` (batch) or ``unfreeze_at_epoch`` (epochs done) makes them
    #: trainable again, at ``unfreeze_lr`` (default ``train.lr``, following the schedule).
    freeze: list[str] = Field(default_factory=list)
    unfreeze_at: PositiveInt | None = None
    unfreeze_at_epoch: PositiveInt | None = None
    unfreeze_lr: PositiveFloat | None = None

    @model_validator(mode="after")
    def _frames_or_history(self) -> ModelConfig:
        if self.backbone.name == "none" and self.history is None:
            raise _field_error(
                "backbone", "backbone 'none' ignores the frames, so the policy needs model.history"
            )
        return self

    @model_validator(mode="after")
    def _delta_heads_not_recurrent(self) -> ModelConfig:
        if self.recurrent is not None and any(h.delta for h in self.heads):
            raise _field_error("heads", "delta bins are not supported in recurrent policies; "
                               "use absolute bins or regression")
        return self

    @model_validator(mode="after")
    def _freeze_consistent(self) -> ModelConfig:
        if any(not glob.strip() for glob in self.freeze):
            raise _field_error("freeze", "globs must not be empty, e.g. 'backbone.*'")
        for name in ("unfreeze_at", "unfreeze_at_epoch", "unfreeze_lr"):
            if getattr(self, name) is not None and not self.freeze:
                raise _field_error(name, "needs model.freeze: the globs of what to unfreeze")
        if self.unfreeze_at is not None and self.unfreeze_at_epoch is not None:
            raise _field_error("unfreeze_at_epoch", "give unfreeze_at (batch) or unfreeze_at_epoch, not both")
        if self.unfreeze_lr is not None and self.unfreeze_at is None and self.unfreeze_at_epoch is None:
            raise _field_error("unfreeze_lr", "needs unfreeze_at or unfreeze_at_epoch: frozen parts never train")
        return self

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


