"""The grouping rule both front ends fold by: a channel map folds into a grouped Conv or
ConvTranspose exactly when it stays within the layer's groups (A block-diagonal in G blocks).

A map that mixes channels across groups folds exactly only into the same layer with G' < G
groups (``algebra.densify``; G' the largest divisor of G whose blocks hold A), which costs
G / G' times the multiply-adds. That is done only when asked (``densify=True``); otherwise the
site is refused with the one message below, naming the cost.
"""
from __future__ import annotations

from typing import Callable

from .algebra import ChannelMap


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
