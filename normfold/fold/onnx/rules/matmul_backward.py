"""MatMul (x @ W, W a stored (K, M) matrix) -> norm: fold into the output features.

MatMul acts on the *last* axis: ``y[..., :] = W^T x[..., :]``. A norm on that
axis folds (``W' = W A^T``, the shift c becomes a bias). A norm on axis 1 is the
same axis only when the output is rank 2; MatMul -> BatchNormalization on an
(N, C, L) tensor normalizes C while the MatMul's features are L, and folding it
would be wrong even when C == L: refused.

MatMul has no bias input: the bias ``c`` (when not zero) becomes a Gemm's C
when the input is rank 2, else one Add after the MatMul. A lone bias Add after
a higher-rank MatMul is that Add already: nothing to gain, so it is left.
"""
from __future__ import annotations

from ...algebra import fold_backward
from ._base import Rewrite, Rule, Site, feature_map, fold_matrix


def rewrite(site: Site) -> Rewrite | str:
    w = site.layer.weight
    m = feature_map(site, -1, w.shape[1], "output features")
    if isinstance(m, str):
        return m
    if site.layer.rank != 2 and m.shift_only:
        return (f"it is {site.layer.name}'s bias already: a MatMul has no bias input and its rank-{site.layer.rank} "
                "output cannot become a Gemm, so the Add would stay")
    w_new, b = fold_matrix(fold_backward, w.T, None, m)
    return Rewrite(w_new.T, None, bias_after=b if bool(b.any()) else None)


RULE = Rule("matmul-backward", "backward", ("MatMul",), rewrite)
