"""norm -> MatMul (x @ W, W a stored (K, M) matrix): fold into the input features.

The norm must act on the last axis of ``x`` (the axis MatMul contracts):

    (A x + c)^T W = x^T (A^T W) + c^T W   =>   W' = A^T W,   bias W^T c

exact for any rank (LayerNorm's scale and shift before a projection, a norm
before the classifier). The bias (when not zero) is merged into the Add that
already follows the MatMul, or becomes a Gemm's C (rank 2), or one new Add.
"""
from __future__ import annotations

from ...algebra import fold_forward
from ._base import Rewrite, Rule, Site, feature_map, fold_matrix


def rewrite(site: Site) -> Rewrite | str:
    w = site.layer.weight
    m = feature_map(site, -1, w.shape[0], "input features")
    if isinstance(m, str):
        return m
    w_new, b = fold_matrix(fold_forward, w.T, None, m)
    return Rewrite(w_new.T, None, bias_after=b if bool(b.any()) else None)


RULE = Rule("matmul-forward", "forward", ("MatMul",), rewrite)
