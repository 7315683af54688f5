"""The policy's kind and its conditioning: ``model.kind``, ``model.command``, ``model.speed_head``.

A *kind* is how a policy treats time (``stateless``: one frame (stack) at a time; ``lstm``: an
LSTM carried from step to step; ``transformer``: attention over the last K frames' features). `drivelab.models.kinds` registers one class per kind name; the
config only needs each kind's name, the `ModelConfig` field holding its options and whether it
trains on sequences, so that this package (which cannot import the models) validates a kind
name in one place. Adding a kind = its module in ``models/`` (registered by name), its options
section here plus one line in `POLICY_KINDS`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal

from pydantic import Field, NonNegativeFloat, PositiveInt, model_validator

from drivelab.config.base import _field_error, _Section


@dataclass(frozen=True)
class KindSpec:
    """What the config must know of a policy kind: its options field, its training step kind,
    and the option (if any) that some training episode must be long enough for."""

    section: str | None  # the ModelConfig field holding the kind's options (None: it has none)
    sequences: bool  # trains on sequences (train.bptt) rather than batches of frames
    #: The section's option counting the steps the kind reads at once (a transformer's window):
    #: the batch order refuses data whose every training episode is shorter.
    window: str | None = None


#: Every policy kind by name; `drivelab.models.kinds` registers a class for each one.
POLICY_KINDS: dict[str, KindSpec] = {
    "stateless": KindSpec(section=None, sequences=False),
    "lstm": KindSpec(section="recurrent", sequences=True),
    "transformer": KindSpec(section="transformer", sequences=True, window="window"),
}


class TransformerConfig(_Section):
    """A causal transformer encoder over the last ``window`` steps (``model.kind: transformer``).

    Every step's token is the neck's output (the frame features, joined with the history branch
    when there is one, as the LSTM's input), projected to ``width``; a learned position per
    slot of the window. At run time the policy keeps the last ``window`` tokens as its state, so
    the backbone sees each frame once; the ``layers`` x ``heads`` encoder reruns over the window
    every step (cheap next to the backbone). Trains on sequences (``train.bptt``): with
    ``mode: window`` use a ``train.bptt.window`` of at least ``window`` (a window starts with an
    empty buffer), or ``sliding``, which carries the buffer from batch to batch.
    """

    window: PositiveInt = 8
    layers: PositiveInt = 2
    heads: PositiveInt = 2
    width: PositiveInt = 64
    dropout: Annotated[float, Field(ge=0, lt=1)] = 0.0

    @model_validator(mode="after")
    def _heads_divide_width(self) -> TransformerConfig:
        if self.width % self.heads:
            raise _field_error("heads", f"{self.heads} heads do not divide width {self.width}: "
                               "use a width that is a multiple of heads")
        return self


class CommandConfig(_Section):
    """A navigation command conditions the policy (CIL, Codevilla et al. 2018).

    ``signal`` is a recorded one-hot telemetry signal of ``values`` values (the traffic world's
    ``command``: left / straight / right). It travels in the telemetry window with the history
    signals (it is appended to ``model.history.signals`` when missing, and a one-step window is
    made when there is no history), and the policy reads the window's last row:
    ``concat`` joins the command to the neck's input; ``branched`` builds one head stack per
    command value and the command selects the branch (only the active branch gets gradient).
    """

    signal: str = Field(default="command", min_length=1)
    mode: Literal["concat", "branched"] = "concat"
    #: The command's values (one-hot width, the branch count); default: its size in the history.
    values: PositiveInt | None = None


class SpeedHeadConfig(_Section):
    """CILRS's auxiliary head: the current speed predicted from the frames' features alone.

    It reads the backbone's features (not the speed input), its loss (MSE on the standardised
    speed, the telemetry window's last ``signal`` value) is added with ``weight`` and logged as
    ``speed_loss``; driving and the exported graph ignore it.
    """

    signal: str = Field(default="speed", min_length=1)
    weight: NonNegativeFloat = 1.0
    widths: list[PositiveInt] = Field(default_factory=lambda: [64])
