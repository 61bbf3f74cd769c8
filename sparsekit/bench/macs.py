"""Moved to ``sparsekit.cost.macs`` (this module re-exports it so old imports keep working)."""

from sparsekit.cost.macs import onnx_macs, torch_macs  # noqa: F401
