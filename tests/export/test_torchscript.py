"""Where the dynamo exporter fails, the TorchScript exporter writes the file, and the file says so.

The model branches on a tensor's value (``y * 2 if y.sum() > 0 else y``):
torch.export refuses it (GuardOnDataDependentSymNode), the TorchScript tracer
records the example's branch. The file is checked against the model on
onnxruntime, and its metadata must name the exporter, the dynamo failure and
the line of the user's code whose branch the trace fixed.
"""
from __future__ import annotations

import warnings

import numpy as np
import onnx
import torch

import normfold
from normfold.cli import main
from normfold.export.torchscript import exporter_of

from ..cli import user_models
from ..cli._workspace import workspace
from ..conftest import run_eager, run_onnx

X = torch.randn(1, 3, 8, 8, generator=torch.Generator().manual_seed(0))


def test_a_data_dependent_branch_is_exported_by_tracing_and_the_file_says_so(tmp_path):
    model = user_models.Net("branch").eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = normfold.export(model, X, tmp_path / "m.onnx")
    note = exporter_of(onnx.load(str(result.path)))
    assert note is not None and note.startswith("torch.onnx.export (dynamo=False, TorchScript)")
    assert "GuardOnDataDependentSymNode" in note
    assert "the trace fixed 1 Python uses of tensor values" in note and "user_models.py:" in note
    assert [f.norm for f in result.fold_report.folded] != []   # the ONNX-graph pass folded the traced file
    np.testing.assert_allclose(run_onnx(result.path, X), run_eager(model, X), rtol=1e-5, atol=1e-5)
    assert onnx.load(str(result.path)).graph.input[0].type.tensor_type.shape.dim[0].dim_value == 1   # one call


def test_run_prints_which_exporter_wrote_the_file(tmp_path, capsys):
    spec = f"{workspace(tmp_path) / 'user.py'}:branch"
    assert main(["run", spec, "--input-shape", "1,3,8,8", "--out", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert "exporter: torch.onnx.export (dynamo=False, TorchScript)" in out
    assert exporter_of(onnx.load(str(tmp_path / "out" / "model.onnx"))) is not None
