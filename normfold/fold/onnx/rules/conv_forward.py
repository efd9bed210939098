"""norm -> Conv: fold into the conv's input channels.

Without zero padding every output position sums a full window of normalized
inputs, so (per group, the bias term summed over the kernel window)

    y = W * (A x + c) + b   =>   W'[g] = W[g] A_g,   b'[o] = b[o] + sum_{i,k} W[o, i, k] c[i]

exactly. With zero padding (``pads`` not all 0, or ``auto_pad`` SAME_*) the
zeros live in the *normalized* domain: at the borders the window sees 0, not
``c``. The exact fold is an input shift: with ``nu = -A^{-1} c``,

    A x + c = A (x - nu)   and   pad0(A v) = A pad0(v)   =>   y = (W A) * pad0(x - nu) + b

so the conv gets ``W' = W A`` and the graph a ``Sub(x, nu)`` in place of the
norm (nothing at all when c == 0). A singular A has no shift: refused.
"""
from __future__ import annotations

from ...algebra import from_groups, to_groups
from ...grouping import fold_conv
from ._base import Rewrite, Rule, Site, axis_reason, channel_map, grouping


def zero_padded(site: Site) -> bool:
    auto_pad = site.layer.attr("auto_pad", "NOTSET")
    return auto_pad in ("SAME_UPPER", "SAME_LOWER") or any(site.layer.attr("pads", ()) or ())


def rewrite(site: Site) -> Rewrite | str:
    why = axis_reason(site, 1, "input channels")
    if why is not None:
        return why
    groups = site.layer.attr("group", 1)
    m = channel_map(site, site.layer.weight.shape[1] * groups, "input channels")
    if isinstance(m, str):
        return m
    new_groups, why = grouping(site, m, "input")
    if why is not None:
        return why
    got = fold_conv(to_groups(site.layer.weight, groups, transposed=False), site.layer.bias, m, new_groups,
                    site.layer.name, forward=True, zero_padded=zero_padded(site))
    if isinstance(got, str):
        return got
    attributes = {"group": new_groups} if new_groups != groups else {}
    return Rewrite(from_groups(got.k, transposed=False), got.bias, attributes, shift=got.shift, note=got.note)


RULE = Rule("conv-forward", "forward", ("Conv",), rewrite)
