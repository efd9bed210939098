"""Export a (folded) model to a checked, simplified ONNX file."""
from .onnx_export import (
    PRECISIONS, ExportError, ExportResult, export, export_with_baseline, fold_graph, op_counts, precision_dtype,
    prepare, torch_fx, unfolded_graph, write_checked,
)

__all__ = ["PRECISIONS", "ExportError", "ExportResult", "export", "export_with_baseline", "fold_graph", "op_counts",
           "precision_dtype", "prepare", "torch_fx", "unfolded_graph", "write_checked"]
