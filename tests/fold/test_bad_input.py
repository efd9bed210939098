"""Bad input to the Python API (issue 12): a clear error carrying the message, nothing else printed,
the caller's model untouched; broken frozen statistics are named, never folded into NaN."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from torch import nn

import normfold
from normfold.export import ExportError
from normfold.fold import FoldError
from normfold.nn import create_norm
from normfold.nn.statistics import broken_statistics, statistics_problem

from ..cli import user_models

X = torch.randn(1, 3, 8, 8, generator=torch.Generator().manual_seed(0))


def _net(kind: str = "plain") -> nn.Module:
    """The user's model of the command-line tests (tests/cli/user_models.py), in eval mode."""
    return user_models.Net(kind).eval()


def _state(model: nn.Module) -> dict:
    return {"training": model.training, **{k: v.clone() for k, v in model.state_dict().items()}}


def _same(a: dict, b: dict) -> bool:
    """Equal, value for value (NaN where NaN was)."""
    def equal(x, y):
        if not isinstance(x, torch.Tensor):
            return x == y
        return x.shape == y.shape and x.dtype == y.dtype and bool(((x == y) | (x.isnan() & y.isnan())).all())
    return a.keys() == b.keys() and all(equal(a[k], b[k]) for k in a)


def _meta_net():
    with torch.device("meta"):
        return _net()


# id: (call(model, tmp_path), error type, message)
CALLS = {
    "fold-empty-list": (lambda m, d: normfold.fold(m, []), FoldError,
                        "example_inputs is empty: give the tensor (or tuple of tensors) Net.forward takes"),
    "fold-empty-tuple": (lambda m, d: normfold.fold(m, ()), FoldError, "example_inputs is empty"),
    "fold-wrong-channels": (lambda m, d: normfold.fold(m, torch.randn(1, 5, 8, 8)), FoldError,
                            "Net rejects example inputs of shape (1, 5, 8, 8): RuntimeError: Given groups=1, weight of "
                            "size [4, 3, 3, 3], expected input[1, 5, 8, 8] to have 3 channels, but got 5 channels"),
    "fold-wrong-rank": (lambda m, d: normfold.fold(m, torch.randn(2, 3)), FoldError,
                        "Net rejects example inputs of shape (2, 3): RuntimeError: Expected 3D (unbatched) or 4D"),
    "fold-two-inputs-for-one": (lambda m, d: normfold.fold(m, (X, X)), FoldError,
                                "Net.forward(x) cannot take the 2 example inputs given: too many positional arguments"),
    "fold-zero-size-input": (lambda m, d: normfold.fold(m, torch.empty(0, 3, 8, 8)), FoldError,
                             "example input 0 has shape (0, 3, 8, 8), which holds no elements"),
    "fold-meta-input": (lambda m, d: normfold.fold(m, torch.empty(1, 3, 8, 8, device="meta")), FoldError,
                        "example input 0 is on the meta device"),
    "fold-meta-model": (lambda m, d: normfold.fold(_meta_net(), X), FoldError,
                        "Net's conv.weight is on the meta device (no values, nothing to fold)"),
    "fold-float64-input": (lambda m, d: normfold.fold(m, X.double()), FoldError,
                           "Input type (double) and bias type (float) should be the same"),
    "fold-int-input": (lambda m, d: normfold.fold(m, X.long()), FoldError, "Input type (long int)"),
    "fold-a-string-as-model": (lambda m, d: normfold.fold("resnet18", X), TypeError,
                               "fold: model must be a torch.nn.Module, got str"),
    "fold-a-string-as-input": (lambda m, d: normfold.fold(m, "x"), TypeError,
                               "example_inputs[0] is str, expected a torch.Tensor"),
    "fold-a-numpy-input": (lambda m, d: normfold.fold(m, X.numpy()), TypeError, "example_inputs[0] is ndarray"),
    "export-empty-inputs": (lambda m, d: normfold.export(m, [], d / "m.onnx"), ExportError,
                            "example_inputs is empty"),
    "export-no-exporter": (lambda m, d: normfold.export(_net("unexportable"), X, d / "m.onnx"), ExportError,
                           "no exporter could export Net: torch.onnx.export (dynamo): torch.onnx.export failed for "
                           "Net: GuardOnDataDependentSymNode: "),
}


@pytest.mark.parametrize("call, error, message", [pytest.param(*c, id=k) for k, c in CALLS.items()])
def test_bad_call_raises_one_clear_error_and_prints_nothing(tmp_path, capfd, call, error, message):
    model = _net()
    before = _state(model)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(error) as info:
            call(model, tmp_path)
    text = str(info.value)
    assert message in text and "\n" not in text and "\x1b[" not in text
    out, err = capfd.readouterr()
    assert out == "" and err == ""
    assert [str(w.message) for w in caught] == []
    assert _same(_state(model), before)
    assert list(tmp_path.iterdir()) == []


def test_the_exporter_failure_names_the_line_in_the_user_code(tmp_path):
    with pytest.raises(ExportError) as info:
        normfold.export(_net("unexportable"), X, tmp_path / "m.onnx")
    assert "(at user_models.py:" in str(info.value) and "y.sum() > 0" in str(info.value)
    assert "(dynamo=False, TorchScript): " in str(info.value) and "linalg_eigvalsh" in str(info.value)


def _bn(var=None, eps=1e-5, **tensors):
    model = _net()
    model.bn.eps = eps
    with torch.no_grad():
        for name, (index, value) in tensors.items():
            getattr(model.bn, name)[index] = value
    return model


# id: (model, the reason fold gives)
BROKEN = {
    "nan-var": (lambda: _bn(running_var=(2, float("nan"))), "running_var[2] = nan: not a finite number"),
    "inf-mean": (lambda: _bn(running_mean=(0, float("inf"))), "running_mean[0] = inf: not a finite number"),
    "negative-var": (lambda: _bn(running_var=(1, -0.5)),
                     "running_var[1] = -0.5: with eps = 1e-05, var + eps = -0.49999 is not positive"),
    "zero-var-zero-eps": (lambda: _bn(running_var=(3, 0.0), eps=0.0),
                          "running_var[3] = 0: with eps = 0, var + eps = 0 is not positive"),
    "var-below-minus-eps": (lambda: _bn(running_var=(0, -2e-5)),
                            "running_var[0] = -2e-05: with eps = 1e-05, var + eps = -1e-05 is not positive"),
    "nan-weight": (lambda: _bn(weight=(3, float("nan"))), "weight[3] = nan: not a finite number"),
}


@pytest.mark.parametrize("make, reason", [pytest.param(*c, id=k) for k, c in BROKEN.items()])
def test_broken_statistics_are_skipped_naming_buffer_channel_and_value(make, reason):
    model = make()
    before = _state(model)
    with torch.no_grad():
        assert not torch.isfinite(model.bn(model.conv(X))).all()   # the norm itself is broken
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = normfold.fold(model, X)
    assert [w for w in caught if issubclass(w.category, RuntimeWarning)] == []
    assert result.report.folded == []
    assert [(s.norm, s.reason) for s in result.report.skipped if reason in s.reason] == [
        ("bn", result.report.skipped[0].reason)]
    assert broken_statistics(model) == [("bn", result.report.skipped[0].reason)]
    assert _same(_state(model), before)


def test_sound_statistics_have_no_problem():
    model = _net()
    assert broken_statistics(model) == [] and statistics_problem(model.bn) is None
    assert len(normfold.fold(model, X).report.folded) == 1


@pytest.mark.parametrize("eigenvalues, broken", [((2.0, 1.0, 0.5, 0.25), False), ((2.0, 1.0, 0.5, -0.25), True),
                                                 ((1.0, 1.0, 1.0, -1e-5), True)],
                         ids=["positive-definite", "negative-eigenvalue", "cancels-eps"])
def test_a_whitening_covariance_must_be_positive_definite(eigenvalues, broken):
    """running_cov = Q diag(lambda) Q^T: cov + eps I is positive definite iff every lambda + eps > 0."""
    layer = create_norm("zca", 4).eval()
    q, _ = torch.linalg.qr(torch.randn(4, 4, generator=torch.Generator().manual_seed(1)))
    cov = q @ torch.diag(torch.tensor(eigenvalues)) @ q.T
    with torch.no_grad():
        layer.running_cov.copy_(cov[None])
    why = statistics_problem(layer)
    expected = any(lam + layer.eps <= 0 for lam in eigenvalues)
    assert (why is not None) == broken == expected
    if broken:
        smallest = float(np.linalg.eigvalsh(cov.double().numpy() + layer.eps * np.eye(4)).min())
        assert why.startswith("running_cov[0] (channels 0-3) + eps I is not positive definite: smallest eigenvalue")
        assert abs(float(why.split("smallest eigenvalue ")[1].split()[0]) - smallest) <= 1e-6 * max(1, abs(smallest))
