"""What an exported policy tells its runtime, stored in the ONNX file's ``metadata_props``.

A runtime in another language gets a graph and a flat string map. Everything it must know to
feed the graph and read its answers is in that map, one key per fact, each value JSON (so a C++ or
Rust reader needs a JSON parser, not drivelab): the signal names and their order, the history
length, the frame size and stack, the action names, ranges and bins, the delta heads, the LSTM
state shape, the run and the checksum of its weights. ``drivelab_format`` and
``drivelab_format_version`` come first: a reader refuses a file without them, or of a version it
does not know, in one line, before it feeds the graph anything.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from drivelab.errors import DrivelabError

#: The value of ``drivelab_format``: what this file is.
FORMAT = "drivelab.policy"
#: The layout of the metadata and of the graph's inputs and outputs; bumped on any change.
FORMAT_VERSION = 1
FORMAT_KEY = "drivelab_format"
VERSION_KEY = "drivelab_format_version"

#: The graph's input names (the ones a policy needs, in this order).
FRAMES, HISTORY, LAST_ACTION, STATE = "frames", "history", "last_action", "state"
#: The recurrent graph's state after the last step.
STATE_OUT = "state_out"
LOGITS_SUFFIX = "_logits"


class MetadataError(DrivelabError):
    """An ONNX file that is not a drivelab policy, or one of another drivelab format version."""


class ActionInfo(BaseModel):
    """One action output: its range (the graph clips to it), and how the head makes it.

    ``low``/``high`` are the recorded action's range (``None``: unbounded). A classification
    head (``bins`` given) answers its argmax bin's value and also exports ``<name>_logits``; a
    delta head (``delta`` given, the head's own range) adds that value to the last executed
    action, the ``last_action`` input column ``delta_index``, clipped to ``delta``.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    low: float | None = None
    high: float | None = None
    bins: tuple[float, ...] | None = None
    delta: tuple[float, float] | None = None
    delta_index: int | None = None


class PolicyCard(BaseModel):
    """Everything in the metadata besides the format keys (see the module docstring)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    run: str  # <run name>@<batch>
    run_path: str
    weights_sha256: str  # of the checkpoint's .safetensors file
    dataset: str  # the data the parity check read
    env: str | None = None  # the world the run was trained in (`drivelab eval FILE` drives there)
    frame_shape: tuple[int, int, int]  # one source frame [H, W, 3], uint8
    frame_stack: int  # k frames stacked oldest first on the channel axis: [B, 3k, H, W]
    history_signals: tuple[str, ...] = ()  # telemetry signals, concatenated in this order
    history_sizes: dict[str, int] = {}
    history_length: int = 0  # the last T telemetry rows, oldest first: [B, T, S]
    actions: tuple[ActionInfo, ...]
    delta_heads: tuple[str, ...] = ()  # the columns of ``last_action``
    recurrent: bool = False
    state_shape: tuple[int, int, int] | None = None  # (2, layers, hidden): [2, layers, B, hidden]
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    exporter: str
    opset: int
    parity: dict[str, float] = {}  # output -> max |onnxruntime - torch| at export
    tolerance: float = 0.0

    @property
    def action_names(self) -> tuple[str, ...]:
        return tuple(a.name for a in self.actions)

    def to_props(self) -> dict[str, str]:
        """The ``metadata_props`` map: the format keys, then one JSON value per field."""
        props = {FORMAT_KEY: FORMAT, VERSION_KEY: str(FORMAT_VERSION)}
        for key, value in self.model_dump(mode="json").items():
            props[key] = json.dumps(value)
        return props

    @classmethod
    def from_props(cls, props: Mapping[str, str], where: str) -> PolicyCard:
        """Read the map back; one `MetadataError` line for a foreign, old/new or damaged file."""
        if props.get(FORMAT_KEY) != FORMAT:
            raise MetadataError(
                f"{where} has no drivelab metadata ({FORMAT_KEY} is "
                f"{props.get(FORMAT_KEY)!r}, expected {FORMAT!r}): export the run with "
                "`drivelab export RUN`"
            )
        version = props.get(VERSION_KEY)
        if version != str(FORMAT_VERSION):
            raise MetadataError(
                f"{where} is drivelab ONNX format version {version!r}; this drivelab reads "
                f"version {FORMAT_VERSION}: export the run again with this drivelab"
            )
        raw: dict[str, Any] = {}
        for key in cls.model_fields:
            if key in props:
                try:
                    raw[key] = json.loads(props[key])
                except ValueError:
                    raise MetadataError(f"{where}: metadata {key!r} is not JSON: the file is damaged") from None
        try:
            return cls.model_validate(raw)
        except ValidationError as exc:
            first = exc.errors()[0]
            at = ".".join(str(p) for p in first["loc"])
            raise MetadataError(f"{where}: metadata {at}: {first['msg']}: export the run again") from None
