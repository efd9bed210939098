"""Latency benchmarks on onnxruntime: unfolded vs folded vs norm-free twin, interleaved."""
from .api import BenchError, bench
from .report import BenchReport, Budget, check_budget
from .twin import TwinReport, norm_free_twin

__all__ = ["BenchError", "BenchReport", "Budget", "bench", "check_budget", "TwinReport", "norm_free_twin"]
