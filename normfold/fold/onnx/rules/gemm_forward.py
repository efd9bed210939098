"""norm -> Gemm: fold into the Gemm's input features (input normalization, a
norm before the classifier).

Per row, with ``W`` (M, K) the Linear weight (see gemm_backward),

    y = alpha W (A x + c) + beta C   =>   W' = alpha W A,   C' = beta C + alpha W c

exact; alpha = beta = 1 afterwards. With transA the input is stored (K, N):
its features are axis 0, so only a scalar norm folds.
"""
from __future__ import annotations

from ...algebra import fold_forward
from ._base import Rewrite, Rule, Site, channel_map, feature_map, fold_matrix
from .gemm_backward import bias_vector, linear_weight, stored_weight


def check(site: Site) -> str | None:
    w = linear_weight(site.layer)
    m = feature_map(site, 1 if not site.layer.attr("transA", 0) else 0, w.shape[1], "input features")
    b = m if isinstance(m, str) else bias_vector(site.layer, w.shape[0])
    return b if isinstance(b, str) else None


def rewrite(site: Site) -> Rewrite | str:
    w = linear_weight(site.layer)
    w_new, b = fold_matrix(fold_forward, w, bias_vector(site.layer, w.shape[0]),
                           channel_map(site, w.shape[1], "input features"))
    return Rewrite(stored_weight(site.layer, w_new), b, {"alpha": 1.0, "beta": 1.0})


RULE = Rule("gemm-forward", "forward", ("Gemm",), check, rewrite)
