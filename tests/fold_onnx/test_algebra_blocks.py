"""The shared algebra's block structure (normfold/fold/algebra.py): the cuts of A, the finest equal
blocks, folds per block, and composition, each against a dense float64 computation written here."""
from __future__ import annotations

import pytest
import torch

from normfold.fold.algebra import ChannelMap, fold_backward, scale_inputs, split_channels, to_groups

C = 64  # with a (64, 64, 3, 3) weight the dense product is past BLOCK_SEARCH: the block path runs


def _block_diagonal(sizes, seed=0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.block_diag(*[torch.randn(s, s, generator=g, dtype=torch.float64) for s in sizes])


STRUCTURES = {
    "dense": [C],
    "two-equal-blocks": [32, 32],
    "eight-blocks": [8] * 8,
    "uneven-blocks": [24, 40],
    "blocks-and-a-lone-channel": [31, 1, 32],
}


def _brute_block_diagonal(a: torch.Tensor, groups: int) -> bool:
    size = a.shape[0] // groups
    mask = torch.block_diag(*[torch.ones(size, size, dtype=torch.bool)] * groups)
    return bool((a[~mask] == 0).all())


@pytest.mark.parametrize("name", list(STRUCTURES))
def test_block_structure_matches_a_brute_force_search(name):
    m = ChannelMap.of(_block_diagonal(STRUCTURES[name]), torch.zeros(C))
    divisors = [d for d in range(1, C + 1) if C % d == 0]
    for d in divisors:
        assert m.is_block_diagonal(d) == _brute_block_diagonal(m.a, d), d
    for groups in (1, 2):
        if m.is_block_diagonal(groups):
            expected = max(d for d in divisors if d % groups == 0 and _brute_block_diagonal(m.a, d))
            assert m.finest_blocks(groups) == expected


SPLITS = {"halves": [32, 32], "thirds": [16, 16, 32], "off-by-one": [31, 33], "eights": [8] * 8, "whole": [C]}


@pytest.mark.parametrize("structure", list(STRUCTURES))
@pytest.mark.parametrize("split", list(SPLITS))
def test_split_channels_matches_a_brute_force_mask(structure, split):
    """A splits into the concatenation's blocks exactly when no entry lies outside them (a mask built
    here); each block's map is A's diagonal block and c's slice."""
    a = _block_diagonal(STRUCTURES[structure], seed=4)
    c = torch.randn(C, dtype=torch.float64)
    sizes = SPLITS[split]
    got = split_channels(ChannelMap.of(a, c), sizes)
    mask = torch.block_diag(*[torch.ones(s, s, dtype=torch.bool) for s in sizes])
    assert (got is not None) == bool((a[~mask] == 0).all())
    if got is not None:
        starts = [sum(sizes[:i]) for i in range(len(sizes))]
        for m, start, size in zip(got, starts, sizes):
            assert torch.equal(m.a, a[start:start + size, start:start + size]) and torch.equal(m.c, c[start:start + size])


# a 2-group layer takes the structures whose blocks stay within its groups (the others are refused first)
FOLDS = [(name, 1) for name in STRUCTURES] + [(name, 2) for name in STRUCTURES if name not in ("dense", "uneven-blocks")]


@pytest.mark.parametrize("name, groups", FOLDS)
def test_folds_per_block_equal_the_dense_products(name, groups):
    a = _block_diagonal(STRUCTURES[name], seed=1)
    m = ChannelMap.of(a, torch.randn(C, dtype=torch.float64))
    assert m.is_block_diagonal(groups)
    weight = torch.randn(C, C // groups, 3, 3, dtype=torch.float64)
    bias = torch.randn(C, dtype=torch.float64)
    k = to_groups(weight, groups, transposed=False)
    size = C // groups
    blocks = [a[g * size:(g + 1) * size, g * size:(g + 1) * size] for g in range(groups)]
    k_new, b_new = fold_backward(k, bias, m)
    dense = torch.stack([torch.einsum("op,pikl->oikl", blocks[g], k[g]) for g in range(groups)])
    torch.testing.assert_close(k_new, dense, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(b_new, a @ bias + m.c, rtol=1e-12, atol=1e-12)
    dense_in = torch.stack([torch.einsum("oikl,ic->ockl", k[g], blocks[g]) for g in range(groups)])
    torch.testing.assert_close(scale_inputs(k, m), dense_in, rtol=1e-12, atol=1e-12)


def test_composition_with_shifts_and_scales_equals_the_matrix_product():
    """x - mu, a full map, a scale, a shift: composed, and against (A, c) of the product of the 4 maps."""
    g = torch.Generator().manual_seed(2)
    mu, w, s, t = (torch.randn(C, generator=g, dtype=torch.float64), _block_diagonal([32, 32], 3),
                   torch.randn(C, generator=g, dtype=torch.float64), torch.randn(C, generator=g, dtype=torch.float64))
    maps = [ChannelMap.of(torch.ones(C), -mu), ChannelMap.of(w, torch.zeros(C)), ChannelMap.of(s, torch.zeros(C)),
            ChannelMap.of(torch.ones(C), t)]
    out = maps[0]
    for m in maps[1:]:
        out = out.then(m)
    affine = torch.eye(C + 1, dtype=torch.float64)
    for m in maps:
        step = torch.eye(C + 1, dtype=torch.float64)
        step[:C, :C], step[:C, C] = m.matrix(), m.c
        affine = step @ affine
    torch.testing.assert_close(out.matrix(), affine[:C, :C], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(out.c, affine[:C, C], rtol=1e-12, atol=1e-12)
