"""Shared test helpers.

Equivalence in tests is judged the way normfold's verify judges it, but computed
here independently: the float64 run of the *original* model is the oracle, and a
candidate may be at most K times as far from it as the original fp32 model is,
plus a floor of a few ulps of the output scale.
"""
from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import NoReturn

import numpy as np
import pytest
import torch
from hypothesis import settings

K = 8.0
FLOOR_ULPS = 64.0


def in_ci() -> bool:
    """CI sets ``CI`` (to "true")."""
    return os.environ.get("CI", "").lower() not in ("", "0", "false")


# CI replays the same examples every run (a red CI names a change, not a draw);
# local runs keep exploring new ones.
settings.register_profile("ci", derandomize=True, print_blob=True)
if in_ci():
    settings.load_profile("ci")


def unavailable(reason: str) -> NoReturn:
    """A test cannot run for want of something third-party: a skip with the reason here, a failure in CI
    (``in_ci()``), whose set-up provides everything the tests need (a skip there would hide a broken set-up)."""
    if in_ci():
        pytest.fail(f"{reason} (in CI this is a failure, not a skip)", pytrace=False)
    pytest.skip(reason)


def third_party_file(name: str) -> Path:
    """The third-party file ``name`` of tests/fold_onnx/third_party.py, or ``unavailable`` with why not."""
    from .fold_onnx import third_party

    try:
        return third_party.path(name)
    except third_party.Unavailable as exc:
        unavailable(f"third-party file {name}: {exc}")


@pytest.fixture(scope="module")
def one_torch_thread():
    """torch on one thread for a module (its models are small, and the suite shares its cores:
    a second thread spin-waiting on a busy core costs more than it gains)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def run_eager(model: torch.nn.Module, x: torch.Tensor, dtype=torch.float32) -> np.ndarray:
    m = copy.deepcopy(model).eval().to(dtype)
    with torch.no_grad():
        return m(x.to(dtype)).double().numpy()


def run_onnx(path, x: torch.Tensor) -> np.ndarray:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x.float().numpy()})[0].astype(np.float64)


def fp32_budget(model: torch.nn.Module, x: torch.Tensor) -> tuple[np.ndarray, float]:
    """(oracle output in float64, the largest error a faithful fp32 variant may have)."""
    oracle = run_eager(model, x, torch.float64)
    e32 = np.abs(run_eager(model, x, torch.float32) - oracle).max()
    scale = np.abs(oracle).max()
    return oracle, K * e32 + FLOOR_ULPS * np.finfo(np.float32).eps * scale


def assert_equivalent_outputs(model, candidate: np.ndarray, x: torch.Tensor) -> float:
    """Assert ``candidate`` (an output for input x) is as close to model's fp64 output as fp32 is."""
    oracle, allowed = fp32_budget(model, x)
    err = float(np.abs(candidate - oracle).max())
    assert err <= allowed, f"error {err:.3g} exceeds the fp32 budget {allowed:.3g}"
    return err


def populate_stats(model: torch.nn.Module, shape, steps: int = 4, seed: int = 0) -> torch.nn.Module:
    """Training-mode passes so running statistics are real, then eval mode."""
    from normfold.zoo.populate import populate

    return populate(model, shape, steps=steps, seed=seed).eval()


@pytest.fixture
def tmp_onnx(tmp_path):
    return tmp_path / "model.onnx"


@pytest.fixture
def wrong_fold(monkeypatch):
    """``wrong_fold(param, channel, factor)``: from now on, normfold's fold (as export and verify call it)
    returns its model with ``param[channel]`` scaled by ``factor``: a wrong fold, whatever the norm.

    (A norm whose claimed map is wrong would make one too, but normfold refuses such norms once it
    checks every map against its module's forward, issue 10.)
    """
    from normfold.export import onnx_export

    real = onnx_export.fold_model

    def arm(param: str, channel: int, factor: float):
        def fold(model, inputs, **kwargs):
            result = real(model, inputs, **kwargs)
            with torch.no_grad():
                result.model.get_parameter(param)[channel] *= factor
            return result

        monkeypatch.setattr(onnx_export, "fold_model", fold)
    return arm
