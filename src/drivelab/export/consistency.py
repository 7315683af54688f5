"""Whether an ONNX file's metadata describes its own graph: checked whenever a file is opened.

The engine feeds the graph and reads its answers by what the metadata says (`PolicyCard`), so
an edited or damaged map drives wrongly without a word: ``actions`` listing one output leaves
the other action at 0 (a car that never accelerates), ``history_signals`` naming a signal that
``history_sizes`` does not size fails deep in the host code. Every field that shapes a call is
compared here with the graph's real inputs and outputs (names, order, element types, static
sizes), and the fields with each other; the first mismatch is one `MetadataError` line naming the
field and the file. The env's side (its signals and their sizes) is `check_fit`'s, once the
card is known to be consistent.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from drivelab.export.metadata import (
    FRAMES,
    HISTORY,
    LAST_ACTION,
    LOGITS_SUFFIX,
    STATE,
    STATE_OUT,
    MetadataError,
    PolicyCard,
)

#: onnxruntime's element type names of what the graph reads: frames uint8, the rest float32
UINT8, FLOAT = "tensor(uint8)", "tensor(float)"
#: the longest signal or action name a card may give (real ones are a word or two)
NAME_LIMIT = 64


@dataclass(frozen=True)
class GraphValue:
    """One graph input or output as onnxruntime reports it: a static size is an int, a dynamic
    axis a name (or None)."""

    name: str
    shape: tuple[int | str | None, ...]
    type: str

    @classmethod
    def of(cls, arg: Any) -> GraphValue:
        """From an onnxruntime ``NodeArg`` (``session.get_inputs()`` / ``get_outputs()``)."""
        shape = tuple(d if isinstance(d, int) or d is None else str(d) for d in (arg.shape or ()))
        return cls(str(arg.name), shape, str(arg.type))


def _show(value: Any, limit: int = 80) -> str:
    """A value read from the file, as text cut short: the file may hold anything."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


class _Checker:
    def __init__(self, card: PolicyCard, where: str) -> None:
        self.card, self.where = card, where

    def fail(self, field: str, detail: str) -> MetadataError:
        return MetadataError(f"{self.where}: metadata {field!r} does not match the graph ({detail}): the "
                             "file was edited or damaged; export the run again")

    def names(self, field: str, card: Sequence[str], graph: Sequence[str], what: str) -> None:
        if list(card) != list(graph):
            raise self.fail(field, f"it gives {_show(list(card))}, the graph's {what} are {_show(list(graph))}")

    def shape(self, field: str, value: GraphValue, want: Sequence[int | None]) -> None:
        """``want``: the sizes the card implies, None where the axis is dynamic (batch, steps)."""
        got = value.shape
        if len(got) != len(want) or any(isinstance(g, int) and w is not None and g != w
                                         for g, w in zip(got, want, strict=False)):
            shown = [g if isinstance(g, int) else "?" for g in got]
            wanted = [w if w is not None else "?" for w in want]
            raise self.fail(field, f"it implies {_show(value.name)} of shape {wanted}, the graph's is {shown}")

    def type(self, value: GraphValue, want: str) -> None:
        if value.type != want:
            raise self.fail("inputs" if value.name in self.card.inputs else "outputs",
                            f"{_show(value.name)} is {_show(value.type)}, a drivelab policy's is {want}")


def check_card(card: PolicyCard, inputs: Sequence[GraphValue], outputs: Sequence[GraphValue], where: str) -> None:
    """Refuse ``card`` unless it describes the graph with ``inputs`` and ``outputs`` (see module)."""
    check = _Checker(card, where)
    check.names("inputs", card.inputs, [v.name for v in inputs], "inputs")
    check.names("outputs", card.outputs, [v.name for v in outputs], "outputs")
    _fields_agree(card, check)
    lead: list[int | None] = [None, None] if card.recurrent else [None]  # batch (, steps)
    by_name = {v.name: v for v in (*inputs, *outputs)}
    h, w, c = card.frame_shape
    frames = by_name[FRAMES]
    check.type(frames, UINT8)
    channels = frames.shape[len(lead)] if len(frames.shape) > len(lead) else None
    # RGB frames: a channel count other than 3 is frame_shape's, a whole multiple of 3 frame_stack's
    stack_edited = c == 3 and isinstance(channels, int) and channels % c == 0
    check.shape("frame_stack" if stack_edited else "frame_shape", frames, [*lead, c * card.frame_stack, None, None])
    check.shape("frame_shape", frames, [*lead, c * card.frame_stack, h, w])
    if HISTORY in by_name:
        width = sum(card.history_sizes[s] for s in card.history_signals)
        check.type(by_name[HISTORY], FLOAT)
        check.shape("history_length", by_name[HISTORY], [*lead, card.history_length, None])
        check.shape("history_sizes", by_name[HISTORY], [*lead, card.history_length, width])
    if LAST_ACTION in by_name:
        check.type(by_name[LAST_ACTION], FLOAT)
        check.shape("delta_heads", by_name[LAST_ACTION], [*lead, len(card.delta_heads)])
    if card.state_shape is not None:
        two, layers, hidden = card.state_shape
        for name in (STATE, STATE_OUT):
            check.type(by_name[name], FLOAT)
            check.shape("state_shape", by_name[name], [two, layers, None, hidden])
    for action in card.actions:
        check.type(by_name[action.name], FLOAT)
        check.shape("actions", by_name[action.name], lead)
        if action.bins is not None:
            check.shape("actions", by_name[action.name + LOGITS_SUFFIX], [*lead, len(action.bins)])


def _fields_agree(card: PolicyCard, check: _Checker) -> None:
    """The fields that imply the graph's signature must imply the one it has."""
    h, w, c = card.frame_shape
    if min(h, w, c, card.frame_stack) < 1:
        raise check.fail("frame_shape" if min(h, w, c) < 1 else "frame_stack", "sizes must be at least 1")
    for field, names in (("history_signals", card.history_signals), ("actions", card.action_names)):
        odd = next((n for n in names if len(n) > NAME_LIMIT or not n.isprintable()), None)
        if odd is not None:  # no signal is called so; and the name would end up in messages
            raise check.fail(field, f"it names {_show(odd)} ({len(odd)} characters): not a signal name")
    signals = card.history_signals
    if len(set(signals)) != len(signals) or set(card.history_sizes) != set(signals):
        raise check.fail("history_signals", f"it lists {_show(list(signals))}, history_sizes sizes "
                                            f"{_show(sorted(card.history_sizes))}")
    if any(size < 1 for size in card.history_sizes.values()):
        raise check.fail("history_sizes", "every signal has at least one value per step")
    if signals and card.history_length < 1:
        raise check.fail("history_length", f"{card.history_length} step(s) of {len(signals)} signal(s)")
    if bool(signals) != (HISTORY in card.inputs):
        raise check.fail("history_signals", f"it lists {len(signals)} signal(s) over {card.history_length} "
                                            f"step(s); the graph {'reads' if HISTORY in card.inputs else 'has no'} "
                                            "history input")
    names = card.action_names
    if not names or len(set(names)) != len(names):
        raise check.fail("actions", f"it names {_show(list(names))}: one or more distinct actions")
    deltas = tuple(a.name for a in card.actions if a.delta is not None)
    if card.delta_heads != deltas or bool(deltas) != (LAST_ACTION in card.inputs):
        raise check.fail("delta_heads", f"it lists {_show(list(card.delta_heads))}, the actions with a delta "
                                        f"are {_show(list(deltas))}")
    for action in card.actions:
        index = deltas.index(action.name) if action.delta is not None else None
        bounded = action.low is None or action.high is None or action.low <= action.high
        if action.delta_index != index or not bounded or (action.bins is not None and not action.bins):
            raise check.fail("actions", f"{_show(action.name)} has an inconsistent range, bins or delta column")
    if card.recurrent != (STATE in card.inputs) or card.recurrent != (card.state_shape is not None):
        raise check.fail("recurrent", f"it says {card.recurrent}, the graph {'reads' if STATE in card.inputs else 'has no'} "
                                      "state input")
    outputs = [n for a in card.actions for n in (a.name, *([a.name + LOGITS_SUFFIX] if a.bins is not None else []))]
    outputs += [STATE_OUT] if card.recurrent else []
    if outputs != list(card.outputs):
        raise check.fail("actions", f"its actions answer {_show(outputs)}, the graph's outputs are "
                                    f"{_show(list(card.outputs))}")


def check_session(card: PolicyCard, session: Any, where: str) -> None:
    """`check_card` against an onnxruntime session's graph."""
    check_card(card, [GraphValue.of(a) for a in session.get_inputs()],
               [GraphValue.of(a) for a in session.get_outputs()], where)
