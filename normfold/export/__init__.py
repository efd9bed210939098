"""Export a (folded) model to a checked, simplified ONNX file."""
from .onnx_export import (
    PRECISIONS, ExportError, ExportResult, export, export_with_baseline, fold_graph, op_counts, precision_dtype,
    prepare, untraced_reason, unfolded_graph, write_checked,
)

__all__ = ["PRECISIONS", "ExportError", "ExportResult", "export", "export_with_baseline", "fold_graph", "op_counts",
           "precision_dtype", "prepare", "unfolded_graph", "untraced_reason", "write_checked"]
