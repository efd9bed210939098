"""pytest helpers: assert that a model survives fold + export unchanged.

    from normfold.testing import assert_equivalent

    def test_model_exports_equivalently(tmp_path):
        model = build_model().eval()
        assert_equivalent(model, torch.randn(1, 3, 224, 224), providers=("cpu",))

``assert_equivalent`` exports the model (folded, dynamic batch) to a temporary
file, verifies it against the model run in float64 (normfold.verify: batch
sizes 1 and 3, the tolerance rule of normfold/verify/tolerance.py) and raises
NotEquivalent (an AssertionError carrying ``.report``) with the report's table
when a check fails.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, Sequence

from torch import nn

from .export import export
from .verify import VerifyReport, verify


class NotEquivalent(AssertionError):
    """A verify check failed; ``report`` is the VerifyReport, ``str(self)`` its table."""

    def __init__(self, message: str, report: VerifyReport):
        super().__init__(message)
        self.report = report


def assert_equivalent(
    model: nn.Module,
    example_inputs: Any,
    *,
    providers: Sequence[str] = ("cpu",),
    atol: float | None = None,
    rtol: float | None = None,
    precision: str = "fp32",
    batch_sizes: Sequence[int] | None = None,
    onnx_path: str | os.PathLike | None = None,
    fold: bool = True,
) -> VerifyReport:
    """Export ``model`` (or take ``onnx_path`` as already exported), verify, raise on failure.

    Returns the report when every check passes. Bad input (a corrupt file, an
    unusable provider) raises the verify error itself, not AssertionError.
    """
    if onnx_path is not None:
        return _check(model, Path(onnx_path), example_inputs, providers, atol, rtol, batch_sizes)
    with tempfile.TemporaryDirectory(prefix="normfold-") as tmp:
        path = Path(tmp) / "model.onnx"
        export(model, example_inputs, path, fold=fold, precision=precision)
        return _check(model, path, example_inputs, providers, atol, rtol, batch_sizes)


def _check(model, path, example_inputs, providers, atol, rtol, batch_sizes) -> VerifyReport:
    report = verify(model, path, example_inputs, providers, atol=atol, rtol=rtol, batch_sizes=batch_sizes)
    if not report.ok:
        raise NotEquivalent(f"{type(model).__name__} is not equivalent to its ONNX export {path.name}:\n{report}", report)
    return report
