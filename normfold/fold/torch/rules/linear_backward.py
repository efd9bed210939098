"""Linear -> norm: fold into the Linear's output features.

    z = W x + b,  y = A z + c   =>   W' = A W,  b' = A b + c

Only when the norm normalizes the Linear's output-feature axis: a Linear acts
on the *last* axis and a norm on axis 1, which are the same axis for a rank-2
output ``(N, F)``, or after a reshape that keeps the features last (LeViT's
``Linear -> flatten(0, 1) -> BatchNorm1d``: (B, L, F) -> (B*L, F)); see
``layout_reason``. Linear -> BatchNorm1d on ``(N, C, L)`` normalizes axis 1 (C)
while the Linear's features are L: folding it would be wrong even when C == L,
so it is refused.
"""
from __future__ import annotations

from torch import nn

from ...algebra import fold_backward
from ._base import Rewrite, Rule, Site, channel_mismatch, grouped_weight, layout_reason, rebuilt


def check(site: Site) -> str | None:
    return (channel_mismatch(site, site.module.out_features, "output features")
            or layout_reason(site, site.out_shape, -1, "output"))


def rewrite(site: Site) -> Rewrite | str:
    k, _, _ = grouped_weight(site.module)
    k, b = fold_backward(k, site.module.bias, site.map)
    new = rebuilt(site.module, k, b)
    return new if isinstance(new, str) else Rewrite(new)


RULE = Rule("linear-backward", "backward", (nn.Linear,), check, rewrite)
