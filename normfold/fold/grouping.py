"""The grouping rule both front ends fold by, and the conv fold they share.

A channel map folds into a grouped Conv or ConvTranspose exactly when it stays within the
layer's groups (A block-diagonal in G blocks). A map that mixes channels across groups folds
exactly only into the same layer with G' < G groups (``algebra.densify``; G' the largest
divisor of G whose blocks hold A), which costs G / G' times the multiply-adds. That is done
only when asked (``densify=True``); otherwise the site is refused with the one message below,
naming the cost.

:func:`fold_conv` is the fold itself, on the per-group weight ``K[g, o, i, *k]``: each front end
only reads its layer into that view and rebuilds the layer from the result.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch

from .algebra import ChannelMap, densify, fold_backward, fold_forward, scale_inputs


def groups_for(m: ChannelMap, groups: int, layer: str, side: str, densify: bool,
               macs: Callable[[int], int | None] | None = None) -> tuple[int, str | None]:
    """(groups to use, why not) for folding ``m`` into ``layer`` with ``groups`` groups.

    ``side`` names the channels the map acts on ("output"/"input"); ``macs(g)``, when given,
    is the layer's multiply-adds per sample with g groups (None where unknown), for the message.
    """
    if m.is_block_diagonal(groups):
        return groups, None
    finest = m.finest_groups(groups)
    if densify:
        return finest, None
    cost = f"{groups // finest}x the MACs"
    before, after = (macs(groups), macs(finest)) if macs is not None else (None, None)
    if before is not None and after is not None:
        cost += f" ({before / 1e6:.3g}M -> {after / 1e6:.3g}M per sample)"
    return finest, (
        f"its channel map mixes {side} channels across the {groups} groups of {layer}; "
        f"the exact fold is a conv with {finest} group{'s' if finest > 1 else ''}, {cost}; "
        "pass densify=True to allow it"
    )


def conv_macs(groups: int, transposed: bool, in_shape, out_shape, in_channels: int, out_channels: int,
              kernel: int) -> int | None:
    """Multiply-adds of one sample through a conv with ``groups`` groups (shapes with the batch
    first; None where the one it needs is not static).

    Every output value of a conv sums ``C_in / G`` windows of ``kernel`` inputs; every input value
    of a transposed conv spreads into ``C_out / G`` windows of ``kernel`` outputs.
    """
    shape, per_group = (in_shape, out_channels) if transposed else (out_shape, in_channels)
    if shape is None or not all(isinstance(d, int) for d in shape[1:]):
        return None
    return math.prod(shape[1:]) * (per_group // groups) * kernel


@dataclass(frozen=True)
class ConvFold:
    k: torch.Tensor                  # K'[g, o, i, *k] with the new groups, float64
    bias: torch.Tensor | None        # float64; None only where the layer has none and the fold adds none
    shift: torch.Tensor | None       # forward under zero padding: the input shift nu (x - nu first)
    note: str


def fold_conv(k: torch.Tensor, bias: torch.Tensor | None, m: ChannelMap, new_groups: int, layer: str, *,
              forward: bool, zero_padded: bool = False) -> ConvFold | str:
    """Fold ``m`` into the conv ``K[g, o, i, *k]`` (``algebra.to_groups``) with ``new_groups``
    groups (``groups_for``; the map holds within them), or why not.

    Backward (``m`` after the conv): ``K'[g] = A_g K[g]``, ``b' = A b + c``. Forward (``m``
    before it): ``K'[g] = K[g] A_g`` and ``c`` summed over the window into the bias, exact
    when the conv sums the same window everywhere. Under zero padding the zeros live in the
    normalized domain and the window sees 0, not ``c``, at the borders; with ``nu = -A^{-1} c``,

        A x + c = A (x - nu)   and   pad0(A v) = A pad0(v)   =>   y = (K A) * pad0(x - nu) + b

    so the conv gets ``K A``, its bias stays, and the caller subtracts ``nu`` from its input
    (nothing when c == 0). A singular A has no ``nu``: refused.
    """
    groups = k.shape[0]
    shift, notes = None, []
    if forward and zero_padded and bool(m.c.any()):
        shift = m.shift()
        if shift is None:
            return (f"{layer} pads with zeros, which the norm's shift c would have to see at the borders, "
                    "and the norm's A is singular, so no exact input shift x - nu exists")
        notes.append("zero padding: input shift x - nu")
    if new_groups != groups:
        k = densify(k, new_groups)
    if shift is not None:
        k, bias = scale_inputs(k, m), None if bias is None else bias.detach().double()
    else:
        k, bias = (fold_forward if forward else fold_backward)(k, bias, m)
    if new_groups != groups:
        notes.append(f"groups {groups} -> {new_groups} (densify)")
    return ConvFold(k, bias, shift, "; ".join(notes))
