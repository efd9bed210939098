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

from ...grouping import fold_conv
from ._base import CONVS, Rewrite, Rule, Site, channel_mismatch, densify_reason, grouped_weight, layout_reason, rebuilt


def zero_padded(conv) -> bool:
    return conv.padding_mode == "zeros" and any(conv._reversed_padding_repeated_twice)


def check(site: Site) -> str | None:
    return (channel_mismatch(site, site.module.in_channels, "input channels")
            or layout_reason(site, site.in_shape, 1, "input"))


def rewrite(site: Site) -> Rewrite | str:
    new_groups, why = densify_reason(site, "input")
    if why is not None:
        return why
    k, _, _ = grouped_weight(site.module)
    fold = fold_conv(k, site.module.bias, site.map, new_groups, site.name, forward=True,
                     zero_padded=zero_padded(site.module) or site.pads_inside)
    if isinstance(fold, str):
        return fold
    bias = fold.bias if fold.bias is not None else fold.k.new_zeros(fold.k.shape[0] * fold.k.shape[1])
    new = rebuilt(site.module, fold.k, bias, new_groups)
    return new if isinstance(new, str) else Rewrite(new, shift=fold.shift, note=fold.note)


RULE = Rule("conv-forward", "forward", CONVS, check, rewrite)
