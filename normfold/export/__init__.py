"""Export a (folded) model to a checked, simplified ONNX file."""
from .onnx_export import ExportError, ExportResult, export, op_counts, write_atomic

__all__ = ["ExportError", "ExportResult", "export", "op_counts", "write_atomic"]
