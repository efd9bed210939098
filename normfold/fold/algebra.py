"""The fold algebra: pure float64 tensor functions, no graph.

A frozen norm is a channel map ``y = A x + c`` (A diagonal ``(C,)`` or full
``(C, C)``). Chains compose:

    A2 (A1 x + c1) + c2 = (A2 A1) x + (A2 c1 + c2)

Every Conv/ConvTranspose/Linear weight is viewed per group as
``K[g, o, i, *k]`` (G groups, O/G outputs, I/G inputs per group):

    Conv           weight (O, I/G, *k)  -> (G, O/G, I/G, *k)
    ConvTranspose  weight (I, O/G, *k)  -> (G, I/G, O/G, *k) -> swap to (G, O/G, I/G, *k)
    Linear         weight (O, I)        -> (1, O, I)

Backward (the map follows the layer; always exact):

    K'[g] = A_g K[g]                     b' = A b + c

Forward (the map precedes the layer; exact when the layer sums the same
window at every position):

    K'[g] = K[g] A_g                     b'[o] = b[o] + sum_{i,k} K[g, o, i, k] c[i]

Both need A block-diagonal within the layer's groups (A_g is the block of group
g). When it is not, :func:`densify` rewrites the weight with fewer, larger groups
(block-diagonal zero padding), which is exact and costs ``G / G'`` times the MACs.
Everything here computes in float64; :func:`cast` is the single cast at the end.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
import torch

BLOCK_SEARCH = 2**20  # multiply-adds of a dense fold above which finding A's finer blocks pays


@dataclass(frozen=True)
class ChannelMap:
    """``y = A x + c`` over the channel axis, in float64."""

    a: torch.Tensor   # (C,) diagonal or (C, C)
    c: torch.Tensor   # (C,)

    @classmethod
    def of(cls, a: torch.Tensor, c: torch.Tensor) -> "ChannelMap":
        a, c = a.detach().double(), c.detach().double()
        n = c.shape[0] if c.dim() == 1 else -1
        if c.dim() != 1 or a.shape not in ((n,), (n, n)):
            raise ValueError(f"a channel map needs A (C,) or (C, C) and c (C,), got A{tuple(a.shape)}, c{tuple(c.shape)}")
        return cls(a, c)

    @property
    def channels(self) -> int:
        return self.c.shape[0]

    @property
    def diagonal(self) -> bool:
        return self.a.dim() == 1

    def matrix(self) -> torch.Tensor:
        return torch.diag(self.a) if self.diagonal else self.a

    @property
    def shift_only(self) -> bool:
        """A is the identity: ``y = x + c``."""
        return self.diagonal and bool((self.a == 1).all())

    def then(self, after: "ChannelMap") -> "ChannelMap":
        """The map ``after(self(x))``. Scaling by a diagonal A is a product per row or column;
        a shift alone (A = 1) leaves the other map's A as it is (a product by 1 is exact)."""
        if self.diagonal and after.diagonal:
            return ChannelMap(after.a * self.a, after.a * self.c + after.c)
        if after.diagonal:
            if after.shift_only:
                return ChannelMap(self.a, self.c + after.c)
            return ChannelMap(after.a[:, None] * self.a, after.a * self.c + after.c)  # diag(a2) A1: scale the rows
        a2 = after.matrix()
        if self.diagonal:
            if self.shift_only:
                return ChannelMap(a2, a2 @ self.c + after.c)
            return ChannelMap(a2 * self.a, a2 @ self.c + after.c)  # A2 diag(a1): scale the columns
        return ChannelMap(a2 @ self.matrix(), a2 @ self.c + after.c)

    @functools.cached_property
    def _cuts(self) -> list[bool]:
        """``cuts[k]``: no entry of A links a channel below k with one at or above it (0 <= k <= C).

        A is block-diagonal with blocks ``[k_0, k_1), [k_1, k_2), ...`` exactly when
        every ``k_i`` is a cut. Entry (i, j) crosses every k with min(i, j) < k <= max(i, j),
        so k is a cut when the farthest nonzero reach of the channels below k is below k.
        """
        n = self.channels
        if self.diagonal:
            return [True] * (n + 1)
        nonzero = self.a.detach().cpu().numpy() != 0  # small arrays: numpy, not torch's per-op cost
        last_in_row = n - 1 - nonzero[:, ::-1].argmax(1)  # n - 1 for an all-zero row: reaches nothing
        last_in_column = n - 1 - nonzero[::-1].argmax(0)
        farthest = np.maximum(np.where(nonzero.any(1), last_in_row, 0), np.where(nonzero.any(0), last_in_column, 0))
        reach = np.maximum.accumulate(farthest)
        return [True, *(reach[:-1] < np.arange(1, n)).tolist(), True]

    def is_block_diagonal(self, groups: int) -> bool:
        if self.diagonal or groups == 1:
            return True
        size, cuts = self.channels // groups, self._cuts
        return all(cuts[k] for k in range(size, self.channels, size))

    def finest_blocks(self, groups: int) -> int:
        """The most equal diagonal blocks of A, a multiple of ``groups`` (whose blocks hold A): the
        block count that folds with the fewest multiply-adds."""
        cuts = self._cuts
        if not any(cuts[1:-1]):  # one dense block (per group: the caller checked those)
            return groups
        per_group = self.channels // groups
        counts = {groups * e for i in range(1, math.isqrt(per_group) + 1) if per_group % i == 0
                  for e in (i, per_group // i)}
        return next(d for d in sorted(counts, reverse=True) if self.is_block_diagonal(d))

    def finest_groups(self, groups: int) -> int:
        """The largest divisor G' of ``groups`` whose blocks hold A: the least-dense exact grouping."""
        return max(d for d in range(1, groups + 1) if groups % d == 0 and self.is_block_diagonal(d))

    def blocks(self, groups: int) -> torch.Tensor:
        """(G, C/G, C/G) diagonal blocks of A (the caller checked block-diagonality)."""
        size = self.channels // groups
        if self.diagonal:
            return torch.diag_embed(self.a.reshape(groups, size))
        a = self.a.contiguous()  # block g starts at row and column g * size: a strided view of them
        return a.as_strided((groups, size, size), (size * self.channels + size, self.channels, 1))

    def shift(self) -> torch.Tensor | None:
        """nu = -A^{-1} c, so that ``A x + c == A (x - nu)``; None when A is singular."""
        if self.diagonal:
            return None if bool((self.a == 0).any()) else -self.c / self.a
        try:
            return -torch.linalg.solve(self.a, self.c)
        except RuntimeError:  # torch.linalg.LinAlgError: singular
            return None

    def condition(self) -> float:
        """Condition number of A (inf when singular)."""
        if self.diagonal:
            mag = self.a.abs()
            return float("inf") if bool((mag == 0).any()) else float(mag.max() / mag.min())
        return float(torch.linalg.cond(self.a))


def compose(maps: list[ChannelMap]) -> ChannelMap:
    """``maps[-1](... maps[0](x))`` as one map."""
    out = maps[0]
    for m in maps[1:]:
        out = out.then(m)
    return out


def to_groups(weight: torch.Tensor, groups: int, transposed: bool) -> torch.Tensor:
    """Any layer weight -> float64 ``K[g, o, i, *k]``."""
    w = weight.detach().double()
    if w.dim() == 2:  # Linear
        return w.unsqueeze(0)
    if transposed:
        k = w.reshape(groups, w.shape[0] // groups, *w.shape[1:])
        return k.transpose(1, 2)
    return w.reshape(groups, w.shape[0] // groups, *w.shape[1:])


def from_groups(k: torch.Tensor, transposed: bool, linear: bool = False) -> torch.Tensor:
    """Inverse of :func:`to_groups`."""
    if linear:
        return k.squeeze(0)
    if transposed:
        k = k.transpose(1, 2)
    return k.reshape(k.shape[0] * k.shape[1], *k.shape[2:])


def densify(k: torch.Tensor, groups: int) -> torch.Tensor:
    """``K[g, o, i, *k]`` with G groups -> the same layer with ``groups`` (a divisor of G) groups.

    Group j of super-group h becomes the j-th diagonal block of new group h;
    the off-diagonal blocks are zero, so the layer computes the same function.
    """
    g_old, og, ig = k.shape[:3]
    r = g_old // groups
    out = k.new_zeros(groups, r * og, r * ig, *k.shape[3:])
    for h in range(groups):
        for j in range(r):
            out[h, j * og:(j + 1) * og, j * ig:(j + 1) * ig] = k[h * r + j]
    return out


def _per_group(v: torch.Tensor, groups: int) -> torch.Tensor:
    return v.reshape(groups, -1)


def fold_backward(k: torch.Tensor, bias: torch.Tensor | None, m: ChannelMap) -> tuple[torch.Tensor, torch.Tensor]:
    """(K', b') for ``m`` applied to the layer's output; ``k`` from :func:`to_groups`."""
    groups = k.shape[0]
    b = bias.detach().double() if bias is not None else torch.zeros(m.channels, dtype=torch.float64, device=k.device)
    extra = [1] * (k.dim() - 3)
    if m.diagonal:
        k_new = k * m.a.reshape(groups, -1, 1, *extra)
        b_new = m.a * b + m.c
    else:  # per block of A (finer than the groups when A allows and the product is worth the search)
        blocks = _blocks_for(k, m)
        k_new = (m.blocks(blocks) @ k.reshape(blocks, m.channels // blocks, -1)).reshape(k.shape)
        b_new = m.a @ b + m.c
    return k_new, b_new


def _blocks_for(k: torch.Tensor, m: ChannelMap) -> int:
    """How many diagonal blocks of a full A to fold ``K[g, o, i, *k]`` by: A's finest
    (:meth:`ChannelMap.finest_blocks`) when the dense product is big enough to pay for the
    search, else one per group."""
    groups = k.shape[0]
    return m.finest_blocks(groups) if k.numel() * m.channels // groups >= BLOCK_SEARCH else groups


def fold_forward(k: torch.Tensor, bias: torch.Tensor | None, m: ChannelMap) -> tuple[torch.Tensor, torch.Tensor]:
    """(K', b') for ``m`` applied to the layer's input (exact only without zero padding)."""
    groups = k.shape[0]
    out_channels = k.shape[0] * k.shape[1]
    b = bias.detach().double() if bias is not None else torch.zeros(out_channels, dtype=torch.float64, device=k.device)
    k_new = scale_inputs(k, m)
    summed = k.reshape(*k.shape[:3], -1).sum(-1)               # (G, O/G, I/G): sum over the kernel window
    b_new = b + torch.einsum("goi,gi->go", summed, _per_group(m.c, groups)).reshape(-1)
    return k_new, b_new


def scale_inputs(k: torch.Tensor, m: ChannelMap) -> torch.Tensor:
    """K'[g] = K[g] A_g: the weight of a layer that sees ``A x`` when given ``x``."""
    groups = k.shape[0]
    extra = [1] * (k.dim() - 3)
    if m.diagonal:
        return k * m.a.reshape(groups, 1, -1, *extra)
    blocks = _blocks_for(k, m)
    size = m.channels // blocks
    per_group = k.reshape(groups, k.shape[1], blocks // groups, size, *k.shape[3:])
    a = m.blocks(blocks).reshape(groups, blocks // groups, size, size)
    return torch.einsum("gobi...,gbic->gobc...", per_group, a).reshape(k.shape)


def cast(t: torch.Tensor, dtype: torch.dtype, what: str = "a folded value") -> tuple[torch.Tensor, str | None]:
    """Cast a float64 result once to ``dtype``; the reason it does not fit, or None.

    ``what`` names the value in that reason.

    A value beyond the dtype's range becomes inf in the cast, so the check runs
    on the (smaller) cast tensor, in one pass; NaN propagates through it too.
    The result is contiguous in the default layout: einsum can hand back a 1x1
    conv weight with strides that torch reads as channels_last, which the
    exporter turns into an as_strided chain of Shape/Range/Gather nodes.
    """
    out = t.to(dtype, memory_format=torch.contiguous_format)
    if not out.dtype.is_floating_point or out.numel() == 0:
        return out, None
    low, high = torch.aminmax(out)
    if math.isfinite(float(low)) and math.isfinite(float(high)):
        return out, None
    if not bool(torch.isfinite(t).all()):
        return t, f"{what} is not finite"
    biggest = float(t.abs().max())
    limit = torch.finfo(dtype).max
    return t, f"{what} reaches {biggest:.4g}, beyond the {str(dtype).replace('torch.', '')} maximum {limit:.6g}"


def fold_into_producer(
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    a: torch.Tensor,
    c: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(W', b') for a Conv/Linear (output channels on weight dim 0, one group), in its dtype."""
    m = ChannelMap.of(a, c)
    if m.channels != weight.shape[0]:
        raise ValueError(
            f"channel map of shape A{tuple(a.shape)}, c{tuple(c.shape)} does not match "
            f"a producer with {weight.shape[0]} output channels"
        )
    k, b = fold_backward(to_groups(weight, 1, transposed=False), bias, m)
    folded = []
    for t in (from_groups(k, transposed=False, linear=weight.dim() == 2), b):
        out, reason = cast(t, weight.dtype)
        if reason is not None:
            raise ValueError(reason)
        folded.append(out)
    return folded[0], folded[1]


def broadcast(m: ChannelMap, channels: int) -> ChannelMap:
    """A one-channel diagonal map (a scalar ``a x + c``) as the same map on ``channels`` channels.

    Any other map is returned as it is; the caller compares its channel count.
    """
    if m.diagonal and m.channels == 1 and channels != 1:
        return ChannelMap(m.a.expand(channels).clone(), m.c.expand(channels).clone())
    return m


def split_channels(m: ChannelMap, sizes: list[int]) -> list[ChannelMap] | None:
    """The map on consecutive channel blocks of ``sizes`` (a concatenation), one map per block.

    With blocks ``[s_k, e_k)``, ``y[s:e] = A[s:e, s:e] x[s:e] + c[s:e]`` holds for every
    block exactly when A has no entry outside the diagonal blocks; None otherwise.
    """
    if sum(sizes) != m.channels or any(s <= 0 for s in sizes):
        raise ValueError(f"blocks of sizes {sizes} do not partition {m.channels} channels")
    bounds = [0]
    for s in sizes:
        bounds.append(bounds[-1] + s)
    if m.diagonal:
        return [ChannelMap(m.a[s:e], m.c[s:e]) for s, e in zip(bounds, bounds[1:])]
    if not all(m._cuts[b] for b in bounds[1:-1]):  # an entry of A crosses a block boundary
        return None
    return [ChannelMap(m.a[s:e, s:e], m.c[s:e]) for s, e in zip(bounds, bounds[1:])]


def without_shift(m: ChannelMap) -> ChannelMap:
    """``x -> A x``: the share of a sum's term that does not carry c (``A (u + v) + c = (A u + c) + A v``)."""
    return ChannelMap(m.a, torch.zeros_like(m.c))
