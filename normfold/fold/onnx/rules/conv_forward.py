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

from ...algebra import densify, fold_forward, from_groups, scale_inputs, to_groups
from ._base import Rewrite, Rule, Site, axis_reason, channel_map, grouping


def zero_padded(site: Site) -> bool:
    auto_pad = site.layer.attr("auto_pad", "NOTSET")
    return auto_pad in ("SAME_UPPER", "SAME_LOWER") or any(site.layer.attr("pads", ()) or ())


def _checked(site: Site):
    why = axis_reason(site, 1, "input channels")
    if why is not None:
        return why
    groups = site.layer.attr("group", 1)
    m = channel_map(site, site.layer.weight.shape[1] * groups, "input channels")
    if isinstance(m, str):
        return m
    new_groups, why = grouping(site, m, groups, "input")
    if why is not None:
        return why
    if zero_padded(site) and bool(m.c.any()) and m.shift() is None:
        return (f"{site.layer.name} pads with zeros, which the norm's shift c would have to see at the borders, "
                "and the norm's A is singular, so no exact input shift x - nu exists")
    return m, new_groups


def check(site: Site) -> str | None:
    got = _checked(site)
    return got if isinstance(got, str) else None


def rewrite(site: Site) -> Rewrite | str:
    got = _checked(site)
    if isinstance(got, str):
        return got
    m, new_groups = got
    groups = site.layer.attr("group", 1)
    k = to_groups(site.layer.weight, groups, transposed=False)
    if new_groups != groups:
        k = densify(k, new_groups)
    shift, notes = None, []
    if zero_padded(site) and bool(m.c.any()):
        k, b = scale_inputs(k, m), site.layer.bias
        shift = m.shift()
        notes.append("zero padding: input shift x - nu")
    else:
        k, b = fold_forward(k, site.layer.bias, m)
    attributes = {"group": new_groups} if new_groups != groups else {}
    if attributes:
        notes.append(f"group {groups} -> {new_groups} (densify)")
    return Rewrite(from_groups(k, transposed=False), b, attributes, shift=shift, note="; ".join(notes))


RULE = Rule("conv-forward", "forward", ("Conv",), check, rewrite)
