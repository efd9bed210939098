"""norm -> Gemm: fold into the Gemm's input features (input normalization, a
norm before the classifier).

Per row, with ``W`` (M, K) the Linear weight (see gemm_backward),

    y = alpha W (A x + c) + beta C   =>   W' = alpha W A,   C' = beta C + alpha W c

exact; alpha = beta = 1 afterwards. With transA the input is stored (K, N):
its features are axis 0, so only a scalar norm folds.
"""
from __future__ import annotations

from . import gemm_backward
from ._base import Rewrite, Rule, Site


def rewrite(site: Site) -> Rewrite | str:
    return gemm_backward.fold(site, forward=True)


RULE = Rule("gemm-forward", "forward", ("Gemm",), rewrite)
