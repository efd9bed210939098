"""The grouping rule shared by decorrelating and whitening layers.

Channels are split into consecutive groups of ``group_size``, each with its own
(g, g) matrix. ``group_size >= C`` means one group of all C channels. A
``group_size`` that does not divide C is refused: a shorter last group would
need its own buffer shape and, for IterNorm, a different trace normalization,
and silently padding it would change the statistics.
"""
from __future__ import annotations

import torch


def group_layout(layer: str, num_features: int, group_size: int) -> tuple[int, int]:
    """Return ``(groups, size)`` or raise a ValueError naming the layer."""
    if num_features < 1:
        raise ValueError(f"{layer}: num_features must be >= 1, got {num_features}")
    if group_size < 1:
        raise ValueError(f"{layer}: group_size must be >= 1, got {group_size}")
    size = min(group_size, num_features)
    if num_features % size:
        raise ValueError(
            f"{layer}: group_size={group_size} does not divide num_features={num_features}; "
            f"choose a divisor of {num_features} (groups are consecutive blocks of equal size)"
        )
    return num_features // size, size


def block_diag(blocks: torch.Tensor) -> torch.Tensor:
    """(G, g, g) -> the (G*g, G*g) block-diagonal matrix."""
    return torch.block_diag(*blocks.unbind(0))


def identity_blocks(groups: int, size: int, dtype=torch.float32) -> torch.Tensor:
    """(G, g, g) identities as real, contiguous storage (never ``expand()``:
    an expanded buffer shares memory across groups and breaks in-place updates)."""
    return torch.eye(size, dtype=dtype).repeat(groups, 1, 1)
