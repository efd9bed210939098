"""Conv1d/2d/3d -> norm: fold into the conv's output channels.

    z = W * x + b,  y = A z + c   =>   y = (A W) * x + (A b + c)

per group: ``W'[g] = A_g W[g]``. The map acts on output channels only, so the
fold is exact for any stride, dilation, padding, padding_mode and bias. A map
that mixes channels across the conv's groups (whitening after a depthwise
conv) needs fewer groups: with ``densify=True`` the conv is rewritten with the
largest group count G' whose blocks contain A (exact, G/G' times the MACs);
otherwise the site is refused and the reason names that cost.
"""
from __future__ import annotations

from ...grouping import fold_conv
from ._base import CONVS, Rewrite, Rule, Site, channel_mismatch, densify_reason, grouped_weight, layout_reason, rebuilt


def check(site: Site) -> str | None:
    return (channel_mismatch(site, site.module.out_channels, "output channels")
            or layout_reason(site, site.out_shape, 1, "output"))


def rewrite(site: Site) -> Rewrite | str:
    new_groups, why = densify_reason(site, "output")
    if why is not None:
        return why
    k, _, _ = grouped_weight(site.module)
    fold = fold_conv(k, site.module.bias, site.map, new_groups, site.name, forward=False)
    if isinstance(fold, str):
        return fold
    new = rebuilt(site.module, fold.k, fold.bias, new_groups)
    return new if isinstance(new, str) else Rewrite(new, note=fold.note)


RULE = Rule("conv-backward", "backward", CONVS, check, rewrite)
