"""ONNX export with self-verification (checker + ORT vs torch on real data + zeros kept).

Example:
    >>> from sparsekit.export import export_run
    >>> export_run("runs/lenet", "lenet.onnx").verification["parity"]["max_abs_diff"]  # doctest: +SKIP
"""

from sparsekit.export.onnx_export import (
    EXPORT_FORMATS,
    ONNX_IR_VERSION,
    ONNX_OPSET,
    ExportResult,
    export_run,
    read_metadata,
    to_onnx_proto,
)
from sparsekit.export.verify import EXPORT_ATOL

__all__ = [
    "EXPORT_ATOL",
    "EXPORT_FORMATS",
    "ONNX_IR_VERSION",
    "ONNX_OPSET",
    "ExportResult",
    "export_run",
    "read_metadata",
    "to_onnx_proto",
]
