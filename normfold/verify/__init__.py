"""Numerical equivalence: float64 oracle vs float32 eager vs ONNX on onnxruntime."""
from .check import verify
from .metrics import ErrorStats
from .report import RunCheck, VerifyReport
from .session import SessionError
from .tolerance import Tolerance

__all__ = ["ErrorStats", "RunCheck", "SessionError", "Tolerance", "VerifyReport", "verify"]
