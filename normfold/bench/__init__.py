"""Latency benchmarks on onnxruntime (issue 6)."""
