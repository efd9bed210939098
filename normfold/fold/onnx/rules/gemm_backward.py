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

from ...algebra import fold_backward
from ._base import Layer, Rewrite, Rule, Site, channel_map, feature_map, fold_matrix


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


def check(site: Site) -> str | None:
    features = linear_weight(site.layer).shape[0]
    m = feature_map(site, 1, features, "output features")
    b = m if isinstance(m, str) else bias_vector(site.layer, features)
    return b if isinstance(b, str) else None


def rewrite(site: Site) -> Rewrite | str:
    w = linear_weight(site.layer)
    w_new, b = fold_matrix(fold_backward, w, bias_vector(site.layer, w.shape[0]),
                           channel_map(site, w.shape[0], "output features"))
    return Rewrite(stored_weight(site.layer, w_new), b, {"alpha": 1.0, "beta": 1.0})


RULE = Rule("gemm-backward", "backward", ("Gemm",), check, rewrite)
