"""Export a (folded) model to a checked, simplified ONNX file."""
from .onnx_export import PRECISIONS, ExportError, ExportResult, export, op_counts, precision_dtype, prepare

__all__ = ["PRECISIONS", "ExportError", "ExportResult", "export", "op_counts", "precision_dtype", "prepare"]
