"""normfold: fold frozen normalization statistics into Conv/Linear weights, export, verify."""
from .bench import BenchReport, bench
from .export import ExportResult, export
from .fold import FoldReport, FoldResult, fold, fold_onnx
from .nn import NotFoldableError, inference_affine, register_norm
from .quantize import QuantOptions, QuantReport, quantize
from .verify import VerifyReport, verify

__version__ = "0.1.0"   # the one place it is written: pyproject.toml reads it (statically)

__all__ = [
    "BenchReport",
    "ExportResult",
    "FoldReport",
    "FoldResult",
    "NotFoldableError",
    "QuantOptions",
    "QuantReport",
    "bench",
    "export",
    "fold",
    "fold_onnx",
    "inference_affine",
    "quantize",
    "register_norm",
    "verify",
    "VerifyReport",
]
