"""The ONNX-graph front end: fold the norms of any .onnx file with the shared float64 algebra."""
from .api import fold_onnx

__all__ = ["fold_onnx"]
