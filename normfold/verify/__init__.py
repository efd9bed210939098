"""Numerical equivalence: a float64 oracle (a PyTorch model or an ONNX graph) vs eager and ONNX runs."""
from .check import verify
from .float64_graph import Float64Graph, OracleError
from .inputs import InputError
from .localize import Divergence
from .metrics import ErrorStats
from .oracle import OnnxOracle, Oracle, TorchOracle, as_oracle
from .report import RunCheck, VerifyReport
from .session import SessionError, cuda_problem
from .signature import OnnxSignature, read_onnx
from .tolerance import Tolerance

__all__ = [
    "Divergence",
    "ErrorStats",
    "Float64Graph",
    "InputError",
    "OnnxOracle",
    "OnnxSignature",
    "Oracle",
    "OracleError",
    "RunCheck",
    "SessionError",
    "Tolerance",
    "TorchOracle",
    "VerifyReport",
    "as_oracle",
    "cuda_problem",
    "read_onnx",
    "verify",
]
