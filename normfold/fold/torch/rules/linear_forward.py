"""norm -> Linear: fold into the Linear's input features (input normalization,
BN after ReLU, whitening before the classifier).

    y = W (A x + c) + b   =>   W' = W A,   b' = b + W c

exact. Only when the Linear's input features are the norm's channels: a
rank-2 input ``(N, C)``, or a reshape that keeps them last (``Flatten`` of
``(N, C, 1, 1)``); on a higher-rank input the Linear reads the last axis while
the norm acts on axis 1 (see ``layout_reason``).
"""
from __future__ import annotations

from torch import nn

from ...algebra import fold_forward
from ._base import Rewrite, Rule, Site, channel_mismatch, grouped_weight, layout_reason, rebuilt


def check(site: Site) -> str | None:
    return (channel_mismatch(site, site.module.in_features, "input features")
            or layout_reason(site, site.in_shape, -1, "input"))


def rewrite(site: Site) -> Rewrite | str:
    k, _, _ = grouped_weight(site.module)
    k, b = fold_forward(k, site.module.bias, site.map)
    new = rebuilt(site.module, k, b)
    return new if isinstance(new, str) else Rewrite(new)


RULE = Rule("linear-forward", "forward", (nn.Linear,), check, rewrite)
