"""Numerical equivalence: a float64 oracle (a PyTorch model or an ONNX graph) vs eager and ONNX runs,
on random inputs (verify) or on every sample of a validation set, streamed (verify_dataset)."""
from .check import verify
from .dataset import Dataset, open_dataset
from .float64_graph import Float64Graph, OracleError
from .inputs import InputError
from .labels import Labels, read_labels
from .localize import Divergence
from .metrics import ErrorStats
from .oracle import OnnxOracle, Oracle, TorchOracle, as_oracle
from .report import RunCheck, VerifyReport
from .session import SessionError, cuda_problem
from .signature import OnnxSignature, read_onnx
from .stream import verify_dataset
from .stream_report import DatasetReport
from .tolerance import Tolerance

__all__ = [
    "Dataset",
    "DatasetReport",
    "Divergence",
    "ErrorStats",
    "Float64Graph",
    "InputError",
    "Labels",
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
    "open_dataset",
    "read_labels",
    "read_onnx",
    "verify",
    "verify_dataset",
]
