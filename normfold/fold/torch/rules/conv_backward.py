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

from ...algebra import densify, fold_backward
from ._base import CONVS, Rewrite, Rule, Site, channel_mismatch, densify_reason, grouped_weight, layout_reason, rebuilt


def check(site: Site) -> str | None:
    return (channel_mismatch(site, site.module.out_channels, "output channels")
            or layout_reason(site, site.out_shape, 1, "output") or densify_reason(site, "output")[1])


def rewrite(site: Site) -> Rewrite | str:
    k, groups, _ = grouped_weight(site.module)
    new_groups, _ = densify_reason(site, "output")
    if new_groups != groups:
        k = densify(k, new_groups)
    k, b = fold_backward(k, site.module.bias, site.map)
    new = rebuilt(site.module, k, b, new_groups)
    if isinstance(new, str):
        return new
    note = f"groups {groups} -> {new_groups} (densify)" if new_groups != groups else ""
    return Rewrite(new, note=note)


RULE = Rule("conv-backward", "backward", CONVS, check, rewrite)
