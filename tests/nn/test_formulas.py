"""Train- and eval-mode outputs against the float64 NumPy formulas; whiteness of the output."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from normfold.nn import IterNorm

from ._reference import EPS64, GROUPED, LAYERS, build, channel_matrix, correlated, eval_forward_np, f64_tol, populated, randomize_affine, train_forward_np

SHAPE = (12, 16, 3, 3)
WHITENING = ["pca", "zca", "zca-wm", "cholesky"]


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_train_output_matches_formula(name):
    layer = populated(name, SHAPE, group_size=8).train()  # real running stats matter for batch renorm
    x = correlated(SHAPE, seed=7)
    expected = train_forward_np(name, layer, x.numpy())
    with torch.no_grad():
        got = layer(x).numpy()
    err = np.abs(got - expected).max()
    assert err <= f64_tol(x.numpy(), expected, layer), f"{name}: max error {err:.3g}"


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_eval_output_matches_formula_from_running_stats(name):
    layer = populated(name, SHAPE, group_size=8)
    assert int(layer.num_batches_tracked) == 3
    x = correlated(SHAPE, seed=8)
    expected = eval_forward_np(name, layer, x.numpy())
    with torch.no_grad():
        got = layer(x).numpy()
    err = np.abs(got - expected).max()
    assert err <= f64_tol(x.numpy(), expected, layer), f"{name}: max error {err:.3g}"


def test_batchrenorm_matches_batchnorm_while_clipped_to_identity():
    """r_max = 1, d_max = 0 is batch norm (the paper's schedule starts there)."""
    layer = populated("brn", SHAPE).train()
    layer.r_max, layer.d_max = 1.0, 0.0
    bn = torch.nn.BatchNorm2d(16).double().train()
    with torch.no_grad():
        bn.weight.copy_(layer.weight)
        bn.bias.copy_(layer.bias)
        x = correlated(SHAPE, seed=9)
        np.testing.assert_allclose(layer(x).numpy(), bn(x).numpy(), rtol=0, atol=1e3 * EPS64 * 10)


def _whitened_cov(layer, x):
    with torch.no_grad():
        y = channel_matrix(layer.train()(x).numpy())
    return np.cov(y, bias=True), channel_matrix(x.numpy())


@pytest.mark.parametrize("name", WHITENING)
def test_whitened_covariance_is_identity_up_to_eps(name):
    """cov(y) = W (Sigma - eps I) W^T = I - eps W W^T, and ||W W^T|| = 1 / lambda_min(Sigma)."""
    layer = GROUPED[name](16, 16).double()
    layer.eps = 1e-3
    cov, xm = _whitened_cov(layer, correlated(SHAPE, seed=3))
    lam_min = np.linalg.eigvalsh(np.cov(xm, bias=True) + layer.eps * np.eye(16)).min()
    err = np.abs(cov - np.eye(16)).max()
    assert err <= layer.eps / lam_min + 1e3 * EPS64
    assert err >= 0.01 * layer.eps / lam_min  # the eps term is really there: the bound is tight


def test_decorrelating_gives_diagonal_covariance_with_sorted_variances():
    layer = GROUPED["decorr"](16, 16).double()
    cov, xm = _whitened_cov(layer, correlated(SHAPE, seed=4))
    lam = np.linalg.eigvalsh(np.cov(xm, bias=True))[::-1]
    np.testing.assert_allclose(np.diag(cov), lam, rtol=1e-9, atol=1e3 * EPS64 * lam.max())
    off = cov - np.diag(np.diag(cov))
    assert np.abs(off).max() <= 1e3 * EPS64 * lam.max()


def test_iternorm_whiteness_improves_as_T_grows():
    """Newton's iteration approaches Sigma^{-1/2}: the error falls with T down to the
    eps floor of exact whitening (cov(y) = I - eps Sigma^{-1}), on an ill-conditioned group."""
    x = correlated((64, 8, 4, 4), seed=5)
    errors = []
    for T in (1, 2, 4, 8, 16, 32):
        cov, xm = _whitened_cov(IterNorm(8, group_size=8, T=T, affine=False).double(), x)
        errors.append(np.abs(cov - np.eye(8)).max())
    assert all(b < a for a, b in zip(errors, errors[1:])), errors
    lam_min = np.linalg.eigvalsh(np.cov(xm, bias=True) + 1e-5 * np.eye(8)).min()
    assert errors[-1] <= 1e-5 / lam_min * (1 + 1e-6) + 1e3 * EPS64, (errors, 1e-5 / lam_min)


@pytest.mark.parametrize("rank", [2, 3, 5])
@pytest.mark.parametrize("name", ["scale", "zca", "iternorm-cov"])
def test_other_ranks_match_formula(name, rank):
    shape = (40, 8, 3, 2, 2)[: rank] if rank > 2 else (40, 8)
    layer = randomize_affine(build(name, 8, 4)).double().train()
    x = correlated(shape, seed=6)
    expected = train_forward_np(name, layer, x.numpy())
    with torch.no_grad():
        got = layer(x).numpy()
    assert np.abs(got - expected).max() <= f64_tol(x.numpy(), expected, layer)
