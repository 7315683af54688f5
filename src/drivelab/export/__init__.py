"""Export: a trained run -> one ONNX file with its input pipeline, checked against the torch runtime.

`run_export.export_run` is the verb's library side; `graph` is the module that becomes the graph
(what is in-graph and what stays on the host), `writer` the exporter, `metadata` what the file tells
its runtime, `samples` and `parity` the check on recorded frames, and `engine` the onnxruntime
engine `drivelab eval --engine onnx` drives with. Sits above models, processor, runs and data, below
evaluate (whose driver runs the engine) and cli.

The ONNX stack (onnx, onnxruntime, onnxscript) is the ``onnx`` extra: importing this package
without it fails with one line naming ``pip install 'drivelab[onnx]'``.
"""

# ruff: noqa: E402  (the extra is checked before the modules that import it)
from drivelab.extras import require_extra

require_extra("onnx", "ONNX export and `drivelab eval --engine onnx`")

from drivelab.export.engine import OnnxLoadError, OnnxRuntime
from drivelab.export.metadata import FORMAT, FORMAT_VERSION, MetadataError, PolicyCard
from drivelab.export.parity import ParityError, ParityReport
from drivelab.export.run_export import FORMATS, ExportRequest, ExportResult, export_run
from drivelab.export.writer import ExportError

__all__ = [
    "FORMAT",
    "FORMATS",
    "FORMAT_VERSION",
    "ExportError",
    "ExportRequest",
    "ExportResult",
    "MetadataError",
    "OnnxLoadError",
    "OnnxRuntime",
    "ParityError",
    "ParityReport",
    "PolicyCard",
    "export_run",
]
