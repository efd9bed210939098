"""norm -> Conv1d/2d/3d: fold into the conv's input channels.

Without zero padding every output position sums a full window of normalized
inputs, so (per group, summing the bias term over the kernel window)

    y = W * (A x + c) + b   =>   W'[g] = W[g] A_g,   b'[o] = b[o] + sum_{i,k} W[o, i, k] c[i]

exactly; that holds for padding 0 and for the reflect/replicate/circular
padding modes too (they copy normalized values, and a per-channel map commutes
with any copy of positions).

With zero padding the zeros live in the *normalized* domain: at the borders
the window sees 0, not ``c``, and the bias term above would be wrong. The exact
fold is an input shift: with ``nu = -A^{-1} c``,

    A x + c = A (x - nu)   and   pad0(A v) = A pad0(v)   =>   y = (W A) * pad0(x - nu) + b

so the conv gets ``W' = W A`` and the graph gets ``x - nu`` before it (one
Sub instead of the norm; nothing at all when c == 0). A singular A has no such
shift: the site is refused with the reason.
"""
from __future__ import annotations

from ...algebra import densify, fold_forward, scale_inputs
from ._base import CONVS, Rewrite, Rule, Site, channel_mismatch, densify_reason, grouped_weight, layout_reason, rebuilt


def zero_padded(conv) -> bool:
    return conv.padding_mode == "zeros" and any(conv._reversed_padding_repeated_twice)


def check(site: Site) -> str | None:
    why = (channel_mismatch(site, site.module.in_channels, "input channels")
           or layout_reason(site, site.in_shape, 1, "input") or densify_reason(site, "input")[1])
    if why is None and zero_padded(site.module) and bool(site.map.c.any()) and site.map.shift() is None:
        return (
            f"{site.name} pads with zeros, which the norm's shift c would have to see at the borders, "
            "and the norm's A is singular, so no exact input shift x - nu exists"
        )
    return why


def rewrite(site: Site) -> Rewrite | str:
    k, groups, _ = grouped_weight(site.module)
    new_groups, _ = densify_reason(site, "input")
    if new_groups != groups:
        k = densify(k, new_groups)
    shift, note = None, ""
    if zero_padded(site.module) and bool(site.map.c.any()):
        k, b = scale_inputs(k, site.map), site.module.bias
        if b is None:
            b = k.new_zeros(k.shape[0] * k.shape[1])
        shift, note = site.map.shift(), "zero padding: input shift x - nu"
    else:
        k, b = fold_forward(k, site.module.bias, site.map)
    new = rebuilt(site.module, k, b.detach().double(), new_groups)
    if isinstance(new, str):
        return new
    if new_groups != groups:
        note = "; ".join(filter(None, [note, f"groups {groups} -> {new_groups} (densify)"]))
    return Rewrite(new, shift=shift, note=note)


RULE = Rule("conv-forward", "forward", CONVS, check, rewrite)
