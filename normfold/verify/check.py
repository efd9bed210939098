"""verify(): the original model in float64 is the oracle; everything else is measured against it.

Runs, on the same inputs:
  eager_fp32   the original model in float32 (its error sets the tolerance)
  onnx_<prov>  the ONNX file on onnxruntime, one run per provider
"""
from __future__ import annotations

import copy
import os
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn
from torch.utils._pytree import tree_leaves

from ..fold import as_input_tuple
from .metrics import ErrorStats
from .report import RunCheck, VerifyReport
from .session import open_session, provider_name, run_session
from .tolerance import Tolerance


def eager_outputs(model: nn.Module, inputs: tuple[torch.Tensor, ...], dtype: torch.dtype) -> list[np.ndarray]:
    """Run a copy of ``model`` in eval mode at ``dtype``; outputs flattened to a list."""
    work = copy.deepcopy(model).eval().to(dtype)
    with torch.no_grad():
        out = work(*(t.to(dtype) for t in inputs))
    return [t.detach().cpu().double().numpy() for t in tree_leaves(out) if isinstance(t, torch.Tensor)]


def verify(
    model: nn.Module,
    onnx_path: str | os.PathLike,
    example_inputs: Any,
    providers: Sequence[str] = ("cpu",),
    *,
    atol: float | None = None,
    rtol: float | None = None,
) -> VerifyReport:
    """Compare ``onnx_path`` on onnxruntime with ``model`` run in float64 (see tolerance.py)."""
    inputs = as_input_tuple(example_inputs)
    for p in providers:
        provider_name(p)  # unknown names fail before any work
    tol = Tolerance(atol=atol, rtol=rtol)
    oracle = eager_outputs(model, inputs, torch.float64)
    fp32 = eager_outputs(model, inputs, torch.float32)
    names = [f"output{i}" if len(oracle) > 1 else "output" for i in range(len(oracle))]

    report = VerifyReport(rule=tol.describe(), environment=_environment(providers))
    ref_errors = []
    for name, ref, got in zip(names, oracle, fp32):
        stats = ErrorStats.of(ref, got)
        ref_errors.append(stats.max_abs)
        report.checks.append(RunCheck("eager_fp32", name, stats, allowed=None, ok=True))

    feed = tuple(t.detach().cpu().float().numpy() for t in inputs)
    for provider in providers:
        outs = run_session(open_session(onnx_path, provider), feed)
        if len(outs) != len(oracle):
            raise ValueError(f"the ONNX model has {len(outs)} outputs, the PyTorch model {len(oracle)}")
        for name, ref, got, e32 in zip(names, oracle, outs, ref_errors):
            stats = ErrorStats.of(ref, got)
            allowed = tol.allowed(e32, stats.scale)
            report.checks.append(RunCheck(f"onnx_{provider}", name, stats, allowed, stats.max_abs <= allowed))
    return report


def _environment(providers: Sequence[str]) -> dict:
    import onnx
    import onnxruntime

    return {
        "torch": torch.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
        "providers": list(providers),
    }
