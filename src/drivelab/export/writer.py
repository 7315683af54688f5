"""The exporter: `DeployedPolicy` -> an ONNX model with named inputs, outputs and dynamic axes.

We use the dynamo exporter (``torch.onnx.export(..., dynamo=True)``, the default since torch
2.9): ``torch.export`` captures the graph, ONNX Script's torchlib translates each ATen op. The
TorchScript exporter (``dynamo=False``) still maps ``nn.LSTM`` to one ONNX ``LSTM`` node, but it is
deprecated and warns on every call, and torchlib now translates ``aten::lstm`` (the history
branch's LSTM) to the same ONNX ``LSTM`` node. Its caveat for LSTMs: torch.export gives
``aten.lstm``'s output the example's sequence length as a constant, so the recurrent policy's LSTM,
whose sequence axis must stay dynamic, is written as ONNX ``LSTM`` nodes directly
(`drivelab.export.lstm`), and the parity check runs other sequence lengths than the example's.
``torch.export`` also fixes any axis of size 1 in the example, hence batch 2 and 3 steps.

We capture with ``torch.export.export`` ourselves and hand the program to the ONNX exporter, so
an op without an ONNX translation is named with the module it sits in (the FX node's
``nn_module_stack``) instead of the exporter's generic page of advice.
"""

from __future__ import annotations

import contextlib
import logging
import re
import warnings
from collections.abc import Iterator

import onnx
import torch

from drivelab.errors import DrivelabError
from drivelab.export.graph import DeployedPolicy, ExampleInputs
from drivelab.export.lstm import exportable_lstm
from drivelab.export.metadata import PolicyCard

#: The ONNX opsets the dynamo exporter writes (18 brought Resize's antialias, used for resizing).
MIN_OPSET = 18
_OP_PATTERN = re.compile(r"target=torch\.ops\.([\w.]+)")


class ExportError(DrivelabError):
    """A policy that cannot become ONNX: an op without translation, an opset out of range."""


def check_opset(opset: int | None) -> None:
    """Refuse an opset the exporter cannot write, before any work."""
    newest = onnx.defs.onnx_opset_version()
    if opset is not None and not MIN_OPSET <= opset <= newest:
        raise ExportError(f"--opset {opset}: the exporter writes opsets {MIN_OPSET}..{newest}")


def exporter_name() -> str:
    return f"torch.onnx dynamo (torch {torch.__version__.split('+')[0]})"


def to_onnx(module: DeployedPolicy, example: ExampleInputs, opset: int | None, label: str) -> onnx.ModelProto:
    """Capture and translate ``module``; one `ExportError` line naming the op and its module."""
    module.eval()
    with warnings.catch_warnings(), torch.no_grad(), _quiet("onnxscript", "torch.onnx"):
        warnings.simplefilter("ignore")  # the exporter's notes on its own internals
        try:
            with exportable_lstm(module.policy):
                program = torch.export.export(module, example.args, dynamic_shapes=example.dynamic_shapes,
                                              strict=False)
        except Exception as exc:
            raise ExportError(f"{label}: torch.export cannot capture the policy ({_first_line(exc)})") from exc
        try:
            onnx_program = torch.onnx.export(program, example.args, dynamo=True, verbose=False,
                                             input_names=module.input_names,
                                             output_names=module.output_names,
                                             opset_version=opset, external_data=False)
        except Exception as exc:
            raise ExportError(_conversion_message(exc, program, label)) from exc
    assert onnx_program is not None
    model = onnx_program.model_proto
    _name_axes(model, list(module.kind.onnx_axes))
    return model


def _name_axes(model: onnx.ModelProto, names: list[str]) -> None:
    """The exporter's symbols (``s41``) -> ``batch`` / ``steps``, read off the frames input."""
    frames = model.graph.input[0].type.tensor_type.shape.dim
    symbols = {frames[i].dim_param: name for i, name in enumerate(names) if frames[i].dim_param}
    if not symbols:
        return
    pattern = re.compile(r"\b(" + "|".join(map(re.escape, symbols)) + r")\b")
    for value in (*model.graph.input, *model.graph.output, *model.graph.value_info):
        for dim in value.type.tensor_type.shape.dim:
            if dim.dim_param:
                dim.dim_param = pattern.sub(lambda m: symbols[m.group(1)], dim.dim_param)


def with_metadata(model: onnx.ModelProto, card: PolicyCard) -> bytes:
    """The serialised model with the card as its ``metadata_props`` (replacing any earlier)."""
    del model.metadata_props[:]
    for key, value in card.to_props().items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    model.producer_name = "drivelab"
    return model.SerializeToString()


def _conversion_message(exc: BaseException, program: torch.export.ExportedProgram, label: str) -> str:
    """Which op failed and in which module, from the exporter's error chain and the FX graph."""
    text = "\n".join(str(e) for e in _chain(exc))
    match = _OP_PATTERN.search(text)
    if match is None:
        return f"{label}: the ONNX exporter failed ({_first_line(exc)})"
    op = match.group(1)
    where = "the policy"
    for node in program.graph.nodes:
        if node.op == "call_function" and str(node.target) == op:
            stack = node.meta.get("nn_module_stack") or {}
            if stack:
                path, kind = list(stack.values())[-1]
                kind = kind.rsplit(".", 1)[-1] if isinstance(kind, str) else getattr(kind, "__name__", kind)
                where = f"module {path.removeprefix('policy.') or 'policy'} ({kind})"
            break
    return (f"{label}: {op} in {where} has no ONNX translation: replace that module "
            "(or the op) to export this policy")


@contextlib.contextmanager
def _quiet(*names: str) -> Iterator[None]:
    """Only errors from these loggers while exporting (the optimizer logs its own skips)."""
    loggers = [logging.getLogger(name) for name in names]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def _chain(exc: BaseException | None) -> list[BaseException]:
    found = []
    while exc is not None and len(found) < 8:
        found.append(exc)
        exc = exc.__cause__ or exc.__context__
    return found


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return (lines[0] if lines else type(exc).__name__)[:200]
