"""The `model` section: backbone, history branch, neck, recurrent core, transfer; heads in `head_section`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal, get_args

from pydantic import (
    Field,
    NonNegativeFloat,
    PositiveFloat,
    PositiveInt,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from drivelab.backbone_registry import (
    close_backbone_names,
    default_pool,
    is_builtin,
    is_known_backbone,
    is_torchvision,
    timm_has_pretrained,
    torchvision_arch,
)
from drivelab.config.base import _field_error, _Section
from drivelab.config.head_section import QUARTER, HeadConfig, quarter_widths
from drivelab.config.policy_section import (
    POLICY_KINDS,
    CommandConfig,
    SpeedHeadConfig,
    TransformerConfig,
)


class BackboneConfig(_Section):
    """The frame encoder: a timm model by name, ``torchvision:<name>``, or a built-in.

    The built-ins are ``tiny`` and ``pilotnet``; ``none`` reads no frames at all (a history-only
    policy, Charles's RNN-only model_0008_v5). A torchvision model (AlexNet, SqueezeNet: timm
    has neither) keeps its own pooling and drops only its last classification layer.

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
        if not is_known_backbone(name):
            close = close_backbone_names(name)
            hint = f"did you mean {', '.join(repr(c) for c in close)}? " if close else ""
            raise ValueError(
                f"unknown backbone {name!r}; {hint}expected 'tiny', 'pilotnet', 'none', a timm "
                "model name (see timm.list_models()) or 'torchvision:<name>'"
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
        if is_torchvision(self.name) and self.pool not in (None, "avg"):
            raise _field_error(
                "pool",
                f"torchvision backbone {self.name!r} keeps the model's own pooling; use pool "
                "'avg' (or leave pool out)",
            )
        if self.pretrained is True:
            if is_torchvision(self.name):
                arch = torchvision_arch(self.name)
                raise _field_error(
                    "pretrained",
                    f"torchvision weights are not downloaded here; save them once with "
                    f"safetensors.torch.save_file(torchvision.models.get_model({arch!r}, "
                    "weights='DEFAULT').state_dict(), 'weights.safetensors') and pass that path",
                )
            if is_builtin(self.name):
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
            self.pool = default_pool(self.name)
        return self


class HistoryConfig(_Section):
    """The telemetry-history branch: the last ``length`` steps of named signals.

    ``kind: lstm`` stacks ``layers`` LSTMs of ``width`` and keeps the last layer's final hidden
    state (Charles model_0008_v7's "thought vector"); ``kind: dense`` flattens the window into
    ``layers`` dense layers (model_0007). ``output: prediction`` makes the branch predict every
    head's output itself and passes those values on instead (model_0008 v1-v5: it invites the
    model to repeat the last action). ``aux_weight > 0`` adds auxiliary heads on the branch alone
    (returned as ``aux/<output>``) weighted in the loss; model_0008_v4 used 0.25.
    Signals have one value per step unless ``signal_sizes`` says otherwise (``purpose: 2``).
    ``dropout``: during training, the chance per sample that the branch's vector reaches the
    neck as zeros (the whole history, not single units), a remedy against copycat policies
    that `drivelab diagnose` flags: the heads must also predict from the frames alone.
    """

    signals: list[str] = Field(min_length=1)
    signal_sizes: dict[str, PositiveInt] = Field(default_factory=dict)
    length: PositiveInt = 60
    kind: Literal["dense", "lstm"] = "lstm"
    layers: PositiveInt = 2
    width: PositiveInt = 128
    output: Literal["thought", "prediction"] = "thought"
    aux_weight: NonNegativeFloat = 0.0
    dropout: Annotated[float, Field(ge=0, lt=1)] = 0.0

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

    #: The policy kind (see `POLICY_KINDS`); default: ``lstm`` with model.recurrent, else ``stateless``.
    kind: str | None = None
    backbone: BackboneConfig = Field(default_factory=BackboneConfig)
    history: HistoryConfig | None = None
    neck: list[PositiveInt] = Field(default_factory=lambda: [256])
    heads: list[HeadConfig] = Field(default_factory=_default_heads, min_length=1)
    #: Per-frame backbone -> LSTM stack -> heads at every step (see RecurrentConfig).
    recurrent: RecurrentConfig | None = None
    #: ``model.kind: transformer``: attention over the last K steps (see TransformerConfig).
    transformer: TransformerConfig | None = None
    #: A navigation command, concatenated or selecting a head branch (see CommandConfig).
    command: CommandConfig | None = None
    #: CILRS's auxiliary speed prediction from the frames (see SpeedHeadConfig).
    speed_head: SpeedHeadConfig | None = None
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
    def _kind_known(self) -> ModelConfig:
        """The one check of ``model.kind``: a known name, its options section and no other's."""
        name = self.kind_name
        if name not in POLICY_KINDS:
            raise _field_error("kind", f"unknown policy kind {name!r}; valid kinds: {', '.join(POLICY_KINDS)}")
        own = POLICY_KINDS[name].section
        for other, spec in POLICY_KINDS.items():
            if spec.section is not None and spec.section != own and getattr(self, spec.section) is not None:
                raise _field_error(spec.section, f"model.{spec.section} configures kind {other!r}, but "
                                   f"model.kind is {name!r}: remove one of them")
        if own is not None and getattr(self, own) is None:  # the kind's options at their defaults
            options = next(t for t in get_args(type(self).model_fields[own].annotation) if t is not type(None))
            setattr(self, own, options())
        return self

    @property
    def kind_name(self) -> str:
        """The policy kind, derived from ``recurrent`` when ``kind`` is not given (old configs)."""
        if self.kind is not None:
            return self.kind
        return "lstm" if self.recurrent is not None else "stateless"

    @model_validator(mode="after")
    def _command_in_window(self) -> ModelConfig:
        """The command travels in the telemetry window: listed there once, with its size."""
        command = self.command
        if command is None:
            return self
        history = self.history
        listed = history is not None and command.signal in history.signals
        values = command.values if command.values is not None else (
            history.signal_sizes.get(command.signal) if history is not None else None)
        if values is None:
            raise _field_error("command", f"give model.command.values: the number of {command.signal!r} "
                               "values (the traffic world's command is a 3-value one-hot)")
        if listed and history is not None and history.signal_size(command.signal) != values:
            raise _field_error("command", f"model.command.values is {values}, but model.history.signal_sizes "
                               f"gives {command.signal!r} {history.signal_size(command.signal)} values")
        command.values = values
        sizes = {command.signal: values} if values != 1 else {}
        if history is None:
            self.history = HistoryConfig(signals=[command.signal], signal_sizes=sizes, length=1, kind="dense",
                                         layers=1, width=1)
        elif not listed:
            self.history = history.model_copy(update={
                "signals": [*history.signals, command.signal],
                "signal_sizes": {**history.signal_sizes, **sizes}})
        if command.mode == "branched" and values < 2:
            raise _field_error("command", f"branched needs a command of 2 or more values, {command.signal!r} has 1")
        return self

    @model_validator(mode="after")
    def _speed_head_fits(self) -> ModelConfig:
        head = self.speed_head
        if head is None:
            return self
        if self.backbone.name == "none":
            raise _field_error("speed_head", "the speed head reads the frames' features: backbone 'none' has none")
        if self.history is None or head.signal not in self.history.signals:
            raise _field_error("speed_head", f"the speed target is read from the telemetry window: add "
                               f"{head.signal!r} to model.history.signals (CILRS also reads the speed)")
        if self.history.signal_size(head.signal) != 1:
            raise _field_error("speed_head", f"{head.signal!r} must be one value per step")
        return self

    @model_validator(mode="after")
    def _delta_heads_not_recurrent(self) -> ModelConfig:
        if POLICY_KINDS[self.kind_name].sequences and any(h.delta for h in self.heads):
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


