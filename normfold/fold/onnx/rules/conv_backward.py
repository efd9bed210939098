"""Conv -> norm: fold into the conv's output channels.

    z = W * x + b,  y = A z + c   =>   y = (A W) * x + (A b + c)

per group: ``W'[g] = A_g W[g]`` (weight ``(O, I/G, *k)``). The map acts on
output channels only, so the fold is exact for any stride, dilation, padding
and auto_pad. A map that mixes channels across the conv's groups is folded
into a conv with fewer groups (``densify=True``: exact, more MACs) or refused.
"""
from __future__ import annotations

from ...algebra import from_groups, to_groups
from ...grouping import fold_conv
from ._base import Rewrite, Rule, Site, axis_reason, channel_map, grouping

TRANSPOSED = False


def output_channels(site: Site, transposed: bool) -> int:
    w, groups = site.layer.weight, site.layer.attr("group", 1)
    return w.shape[1] * groups if transposed else w.shape[0]


def fold(site: Site, transposed: bool) -> Rewrite | str:
    why = axis_reason(site, 1, "output channels")
    if why is not None:
        return why
    m = channel_map(site, output_channels(site, transposed), "output channels")
    if isinstance(m, str):
        return m
    new_groups, why = grouping(site, m, "output")
    if why is not None:
        return why
    groups = site.layer.attr("group", 1)
    got = fold_conv(to_groups(site.layer.weight, groups, transposed), site.layer.bias, m, new_groups,
                    site.layer.name, forward=False)
    if isinstance(got, str):
        return got
    attributes = {"group": new_groups} if new_groups != groups else {}
    return Rewrite(from_groups(got.k, transposed), got.bias, attributes, note=got.note)


def rewrite(site: Site) -> Rewrite | str:
    return fold(site, TRANSPOSED)


RULE = Rule("conv-backward", "backward", ("Conv",), rewrite)
