"""Gemm -> norm: fold into the Gemm's output features.

Gemm computes ``Y = alpha A' B' + beta C`` (``A' = A^T`` when transA,
``B' = B^T`` when transB); per row, with ``W = B'^T`` (M, K) the Linear weight
and ``C`` a vector over the M features,

    y = alpha W x + beta C,  z = A_n y + c   =>   W' = A_n (alpha W),  C' = A_n (beta C) + c

and alpha = beta = 1 afterwards; B keeps its transB layout. The output is
rank 2, so the norm's axis 1 is the features. A C with one row per sample
(shape (N, M) or (N, 1)) is not a bias vector: refused.
"""
from __future__ import annotations

import torch

from ...algebra import fold_backward, fold_forward
from ._base import Layer, Rewrite, Rule, Site, feature_map, fold_matrix


def linear_weight(layer: Layer) -> torch.Tensor:
    """W (M, K) = B'^T, scaled by alpha."""
    b = layer.weight
    w = b if layer.attr("transB", 0) else b.T
    return w * float(layer.attr("alpha", 1.0))


def stored_weight(layer: Layer, w: torch.Tensor) -> torch.Tensor:
    """W (M, K) back in B's layout."""
    return w if layer.attr("transB", 0) else w.T


def bias_vector(layer: Layer, features: int) -> torch.Tensor | None | str:
    """beta C as a (M,) vector, None without C, or why C is not a vector."""
    c = layer.bias
    if c is None:
        return None
    if c.dim() > 2 or (c.dim() == 2 and c.shape[0] != 1) or c.numel() not in (1, features):
        return f"the C of {layer.name} has shape {list(c.shape)}: not one bias vector for every row"
    return c.reshape(-1).expand(features).clone() * float(layer.attr("beta", 1.0))


def fold(site: Site, forward: bool) -> Rewrite | str:
    """The map folded into the Gemm's input features (``forward``) or output features; alpha = beta = 1
    afterwards. With transA the input is stored (K, N): its features are axis 0."""
    w = linear_weight(site.layer)
    if forward:
        m = feature_map(site, 0 if site.layer.attr("transA", 0) else 1, w.shape[1], "input features")
    else:
        m = feature_map(site, 1, w.shape[0], "output features")
    if isinstance(m, str):
        return m
    bias = bias_vector(site.layer, w.shape[0])
    if isinstance(bias, str):
        return bias
    w_new, b = fold_matrix(fold_forward if forward else fold_backward, w, bias, m)
    return Rewrite(stored_weight(site.layer, w_new), b, {"alpha": 1.0, "beta": 1.0})


def rewrite(site: Site) -> Rewrite | str:
    return fold(site, forward=False)


RULE = Rule("gemm-backward", "backward", ("Gemm",), rewrite)
