"""Conv -> norm: fold into the conv's output channels.

    z = W * x + b,  y = A z + c   =>   y = (A W) * x + (A b + c)

per group: ``W'[g] = A_g W[g]`` (weight ``(O, I/G, *k)``). The map acts on
output channels only, so the fold is exact for any stride, dilation, padding
and auto_pad. A map that mixes channels across the conv's groups is folded
into a conv with fewer groups (``densify=True``: exact, more MACs) or refused.
"""
from __future__ import annotations

from ...algebra import densify, fold_backward, from_groups, to_groups
from ._base import Rewrite, Rule, Site, axis_reason, channel_map, grouping

TRANSPOSED = False


def output_channels(site: Site, transposed: bool) -> int:
    w, groups = site.layer.weight, site.layer.attr("group", 1)
    return w.shape[1] * groups if transposed else w.shape[0]


def checked(site: Site, transposed: bool):
    """(map, groups to use) or the reason."""
    why = axis_reason(site, 1, "output channels")
    if why is not None:
        return why
    m = channel_map(site, output_channels(site, transposed), "output channels")
    if isinstance(m, str):
        return m
    groups, why = grouping(site, m, site.layer.attr("group", 1), "output")
    return why or (m, groups)


def fold(site: Site, transposed: bool) -> Rewrite | str:
    got = checked(site, transposed)
    if isinstance(got, str):
        return got
    m, new_groups = got
    groups = site.layer.attr("group", 1)
    k = to_groups(site.layer.weight, groups, transposed)
    if new_groups != groups:
        k = densify(k, new_groups)
    k, b = fold_backward(k, site.layer.bias, m)
    attributes = {"group": new_groups} if new_groups != groups else {}
    note = f"group {groups} -> {new_groups} (densify)" if attributes else ""
    return Rewrite(from_groups(k, transposed), b, attributes, note=note)


def check(site: Site) -> str | None:
    got = checked(site, TRANSPOSED)
    return got if isinstance(got, str) else None


def rewrite(site: Site) -> Rewrite | str:
    return fold(site, TRANSPOSED)


RULE = Rule("conv-backward", "backward", ("Conv",), check, rewrite)
