"""norm -> Gemm: fold into the Gemm's input features (input normalization, a
norm before the classifier).

Per row, with ``W`` (M, K) the Linear weight (see gemm_backward),

    y = alpha W (A x + c) + beta C   =>   W' = alpha W A,   C' = beta C + alpha W c

exact; alpha = beta = 1 afterwards. With transA the input is stored (K, N):
its features are axis 0, so only a scalar norm folds.
"""
from __future__ import annotations

from ...algebra import fold_forward, from_groups, to_groups
from ._base import Rewrite, Rule, Site, axis_reason, channel_map
from .gemm_backward import bias_vector, linear_weight, stored_weight


def check(site: Site) -> str | None:
    w = linear_weight(site.layer)
    why = axis_reason(site, 1 if not site.layer.attr("transA", 0) else 0, "input features")
    if why is None:
        m = channel_map(site, w.shape[1], "input features")
        why = m if isinstance(m, str) else None
    if why is None:
        b = bias_vector(site.layer, w.shape[0])
        why = b if isinstance(b, str) else None
    return why


def rewrite(site: Site) -> Rewrite | str:
    w = linear_weight(site.layer)
    m = channel_map(site, w.shape[1], "input features")
    k, b = fold_forward(to_groups(w, 1, transposed=False), bias_vector(site.layer, w.shape[0]), m)
    w_new = from_groups(k, transposed=False, linear=True)
    return Rewrite(stored_weight(site.layer, w_new), b, {"alpha": 1.0, "beta": 1.0})


RULE = Rule("gemm-forward", "forward", ("Gemm",), check, rewrite)
