"""Independent float64 NumPy formulas for the layers in normfold.nn, and shared cases.

Nothing here calls the code under test: the references are the formulas of the
issue and the papers, written with numpy.linalg.
"""
from __future__ import annotations

import numpy as np
import torch

from normfold.nn import (
    BatchRenorm,
    Centering,
    CholeskyWhitening,
    Decorrelating,
    IterNorm,
    PCAWhitening,
    Scaling,
    ZCAWhitening,
)

EPS64 = np.finfo(np.float64).eps
C = 16

# name -> constructor(num_features, group_size); diagonal layers ignore group_size.
_TORCH_BN = {2: torch.nn.BatchNorm1d, 3: torch.nn.BatchNorm1d, 4: torch.nn.BatchNorm2d, 5: torch.nn.BatchNorm3d}
DIAGONAL = {
    "bn": lambda c, g, rank=4: _TORCH_BN[rank](c),
    "center": lambda c, g: Centering(c),
    "scale": lambda c, g: Scaling(c),
    "brn": lambda c, g: BatchRenorm(c),
}
GROUPED = {
    "decorr": lambda c, g: Decorrelating(c, group_size=g),
    "pca": lambda c, g: PCAWhitening(c, group_size=g),
    "zca": lambda c, g: ZCAWhitening(c, group_size=g),
    "zca-wm": lambda c, g: ZCAWhitening(c, group_size=g, running="wm"),
    "cholesky": lambda c, g: CholeskyWhitening(c, group_size=g),
    "iternorm": lambda c, g: IterNorm(c, group_size=g, T=5),
    "iternorm-cov": lambda c, g: IterNorm(c, group_size=g, T=5, running="cov"),
}
LAYERS = {**DIAGONAL, **GROUPED}


def correlated(shape, seed: int = 0, dtype=torch.float64) -> torch.Tensor:
    """(N, C, *S) with strongly correlated channels, offsets and unequal scales."""
    gen = torch.Generator().manual_seed(seed)
    c = shape[1]
    z = torch.randn(shape, generator=gen, dtype=torch.float64)
    mix = torch.randn(c, c, generator=gen, dtype=torch.float64) + 2.0 * torch.eye(c, dtype=torch.float64)
    x = torch.einsum("dc,nc...->nd...", mix, z)
    offset = 3.0 * torch.randn(c, generator=gen, dtype=torch.float64)
    return (x + offset.reshape(1, c, *([1] * (len(shape) - 2)))).to(dtype)


def randomize_affine(layer: torch.nn.Module, seed: int = 1) -> torch.nn.Module:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name in ("weight", "bias"):
            p = getattr(layer, name, None)
            if isinstance(p, torch.Tensor):
                p.copy_(torch.rand(p.shape, generator=gen) + 0.5 if name == "weight" else torch.randn(p.shape, generator=gen))
    return layer


def populated(name: str, shape, group_size: int = 4, steps: int = 3, seed: int = 0) -> torch.nn.Module:
    """A float64 layer with random gamma/beta and running statistics from ``steps`` batches, in eval."""
    layer = build(name, shape[1], group_size, rank=len(shape))
    layer = randomize_affine(layer).double().train()
    with torch.no_grad():
        for k in range(steps):
            layer(correlated(shape, seed=seed + 100 + k))
    return layer.eval()


def build(name: str, c: int, group_size: int = 4, rank: int = 4) -> torch.nn.Module:
    return LAYERS[name](c, group_size, rank) if name == "bn" else LAYERS[name](c, group_size)


# -- NumPy formulas --------------------------------------------------------

def channel_matrix(x: np.ndarray) -> np.ndarray:
    return np.moveaxis(x, 1, 0).reshape(x.shape[1], -1)


def from_channel_matrix(y: np.ndarray, shape) -> np.ndarray:
    return np.moveaxis(y.reshape(shape[1], shape[0], *shape[2:]), 0, 1)


def eigh_desc(sigma: np.ndarray):
    lam, d = np.linalg.eigh(sigma)
    lam, d = lam[::-1], d[:, ::-1]
    signs = np.sign(d[np.abs(d).argmax(axis=0), np.arange(d.shape[1])])
    return lam, d * signs


def newton_np(sigma: np.ndarray, T: int) -> np.ndarray:
    tr = np.trace(sigma)
    sn, p = sigma / tr, np.eye(len(sigma))
    for _ in range(T):
        p = 1.5 * p - 0.5 * p @ p @ p @ sn
    return p / np.sqrt(tr)


def whitening_np(kind: str, sigma: np.ndarray, T: int = 5) -> np.ndarray:
    if kind == "decorr":
        return eigh_desc(sigma)[1].T
    if kind == "pca":
        lam, d = eigh_desc(sigma)
        return np.diag(lam**-0.5) @ d.T
    if kind.startswith("zca"):
        lam, d = np.linalg.eigh(sigma)
        return d @ np.diag(lam**-0.5) @ d.T
    if kind == "cholesky":
        return np.linalg.inv(np.linalg.cholesky(sigma))
    if kind.startswith("iternorm"):
        return newton_np(sigma, T)
    raise KeyError(kind)


def train_forward_np(name: str, layer, x: np.ndarray) -> np.ndarray:
    """The training-mode output of layer ``name`` by its formula, from the layer's
    hyper-parameters, gamma/beta and (batch renorm only) its running statistics before the step."""
    xm = channel_matrix(x)
    m = xm.shape[1]
    mu, var = xm.mean(1, keepdims=True), xm.var(1, keepdims=True)
    eps = getattr(layer, "eps", 0.0)
    if name == "bn":
        y = (xm - mu) / np.sqrt(var + eps)
    elif name == "center":
        y = xm - mu
    elif name == "scale":
        y = xm / np.sqrt(var + eps)
    elif name == "brn":
        s_run = np.sqrt(layer.running_var.double().numpy()[:, None] + eps)
        s_b = np.sqrt(var + eps)
        r = np.clip(s_b / s_run, 1 / layer.r_max, layer.r_max)
        d = np.clip((mu - layer.running_mean.double().numpy()[:, None]) / s_run, -layer.d_max, layer.d_max)
        y = (xm - mu) / s_b * r + d
    else:
        g = layer.group_size
        y = np.empty_like(xm)
        for s in range(0, xm.shape[0], g):
            xc = xm[s:s + g] - mu[s:s + g]
            sigma = eps * np.eye(g) + xc @ xc.T / m
            y[s:s + g] = whitening_np(name, sigma, getattr(layer, "T", 5)) @ xc
    return from_channel_matrix(affine_np(layer, y), x.shape)


def eval_forward_np(name: str, layer, x: np.ndarray) -> np.ndarray:
    """The eval output from the layer's running statistics, by the formula."""
    xm = channel_matrix(x)
    eps = getattr(layer, "eps", 0.0)
    buf = lambda n: getattr(layer, n).double().numpy()  # noqa: E731
    if name in ("bn", "brn"):
        y = (xm - buf("running_mean")[:, None]) / np.sqrt(buf("running_var")[:, None] + eps)
    elif name == "center":
        y = xm - buf("running_mean")[:, None]
    elif name == "scale":
        y = xm / np.sqrt(buf("running_var")[:, None] + eps)
    else:
        g = layer.group_size
        xc = xm - buf("running_mean")[:, None]
        y = np.empty_like(xm)
        for k, s in enumerate(range(0, xm.shape[0], g)):
            if layer.running == "wm":
                w = buf("running_wm")[k]
            else:
                w = whitening_np(name, buf("running_cov")[k] + eps * np.eye(g), getattr(layer, "T", 5))
            y[s:s + g] = w @ xc[s:s + g]
    return from_channel_matrix(affine_np(layer, y), x.shape)


def affine_np(layer, y: np.ndarray) -> np.ndarray:
    w, b = getattr(layer, "weight", None), getattr(layer, "bias", None)
    if isinstance(w, torch.Tensor):
        y = y * w.detach().double().numpy()[:, None]
    if isinstance(b, torch.Tensor):
        y = y + b.detach().double().numpy()[:, None]
    return y


def f64_tol(x: np.ndarray, reference: np.ndarray, layer) -> float:
    """Float64 agreement a backward-stable computation reaches: eps64 times the
    conditioning of the group covariances and the output scale."""
    cond = 1.0
    if hasattr(layer, "group_size"):
        xm = channel_matrix(x)
        g = layer.group_size
        for s in range(0, xm.shape[0], g):
            cond = max(cond, np.linalg.cond(np.atleast_2d(np.cov(xm[s:s + g], bias=True)) + layer.eps * np.eye(g)))
    return 1e3 * EPS64 * cond * max(1.0, np.abs(reference).max())
