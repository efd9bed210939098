"""norm -> MatMul (x @ W, W a stored (K, M) matrix): fold into the input features.

The norm must act on the last axis of ``x`` (the axis MatMul contracts):

    (A x + c)^T W = x^T (A^T W) + c^T W   =>   W' = A^T W,   bias W^T c

exact for any rank (LayerNorm's scale and shift before a projection, a norm
before the classifier). The bias (when not zero) is merged into the Add that
already follows the MatMul, or becomes a Gemm's C (rank 2), or one new Add.
"""
from __future__ import annotations

from ...algebra import fold_forward, from_groups, to_groups
from ._base import Rewrite, Rule, Site, axis_reason, channel_map


def check(site: Site) -> str | None:
    why = axis_reason(site, -1, "input features")
    if why is None:
        m = channel_map(site, site.layer.weight.shape[0], "input features")
        why = m if isinstance(m, str) else None
    return why


def rewrite(site: Site) -> Rewrite | str:
    w = site.layer.weight
    m = channel_map(site, w.shape[0], "input features")
    k, b = fold_forward(to_groups(w.T, 1, transposed=False), None, m)
    w_new = from_groups(k, transposed=False, linear=True).T
    return Rewrite(w_new, None, bias_after=b if bool(b.any()) else None)


RULE = Rule("matmul-forward", "forward", ("MatMul",), check, rewrite)
