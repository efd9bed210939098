"""Numerical equivalence: float64 oracle vs eager (original, folded) vs ONNX on onnxruntime."""
from .check import read_onnx, verify
from .inputs import InputError
from .localize import Divergence
from .metrics import ErrorStats
from .report import RunCheck, VerifyReport
from .session import SessionError, cuda_problem
from .tolerance import Tolerance

__all__ = [
    "Divergence",
    "ErrorStats",
    "InputError",
    "RunCheck",
    "SessionError",
    "Tolerance",
    "VerifyReport",
    "cuda_problem",
    "read_onnx",
    "verify",
]
