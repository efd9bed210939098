"""Shared weights: a layer whose weight (or bias) other nodes read too gets its own folded copy.

One initializer read by two Conv nodes, each followed by its own norm, folds
exactly: each consumer that takes a fold reads a new initializer, ``A_k W``
for consumer k; a consumer whose norm does not fold keeps reading the original
``W``, which the pass drops only when nothing reads it any more. Nothing a
consumer computes changes but its own output, so no fold can reach another
consumer's values.

The cost is memory, never error: a weight shared by k consumers of which f
fold is stored ``f + [f < k]`` times instead of once, so the model grows by

    added = bytes(W) * (f - 1 + [f < k])                 (summed over the shared tensors)

Bound: a copy is made while the copies made so far, with it, stay within
``max(FLOOR, SHARE * stored)`` bytes, ``stored`` the bytes of the model's
initializers; above it the site is refused with the sizes. ``SHARE = 10 %``
keeps the folded file within 1.1x of the original: a norm fold saves one pass
over an activation per inference, which does not pay for a model that is much
larger to load, ship and keep in memory. The ``FLOOR`` of 16 MiB lets small
models fold, where one shared 3x3 conv weight can be most of the file: it
holds a copy of any single conv weight of the common vision backbones (the
largest of a ResNet-50, 512x512x3x3 in float32, is 9 MiB).
"""
from __future__ import annotations

from dataclasses import dataclass

import onnx_ir as ir
import torch

from .graph import label

FLOOR = 16 * 2**20
SHARE = 0.10
INPUTS = {"weight": 1, "bias": 2}   # the layer's inputs a fold replaces, by the key of its new tensor


@dataclass
class Copies:
    stored: int      # bytes of the model's initializers
    total: int = 0   # bytes of every copy made so far: what the model grows by (see ``note``)

    @classmethod
    def of(cls, graph: ir.Graph) -> "Copies":
        return cls(sum(v.const_value.nbytes for v in graph.initializers.values() if v.const_value is not None))

    @property
    def bound(self) -> int:
        return max(FLOOR, int(SHARE * self.stored))

    def needed(self, node: ir.Node, tensors: dict[str, torch.Tensor]) -> list[tuple[str, ir.Value, int]] | str:
        """The copies a fold of ``node`` with these new ``tensors`` makes, as (what, original, bytes):
        one per replaced input that another node reads too; or why they exceed the bound."""
        out = []
        for what, index in INPUTS.items():
            if what not in tensors or len(node.inputs) <= index or node.inputs[index] is None:
                continue
            value = node.inputs[index]
            if any(use.node is not node for use in value.uses()):
                t = tensors[what]
                out.append((what, value, t.numel() * t.element_size()))
        extra = sum(b for _, _, b in out)
        if out and self.total + extra > self.bound:
            what, value, _ = out[0]
            return (f"the {what} {value.name!r} of {label(node)} is shared with {_others(value, node)}: folding "
                    f"it needs its own copy, and the copies would add {_mib(self.total + extra)}, more than the "
                    f"{_mib(self.bound)} allowed (the larger of {_mib(FLOOR)} and {SHARE:.0%} of the model's "
                    f"{_mib(self.stored)} of weights)")
        return out

    def note(self, node: ir.Node, copies: list[tuple[str, ir.Value, int]]) -> str:
        """Record the copies made for ``node`` (before its inputs are replaced) and say so.

        Only a fold of a tensor that another node still reads counts: the last reader to fold
        replaces the original instead (nothing reads it after), so ``total`` is exactly
        ``bytes(W) * (f - 1 + [f < k])`` per shared tensor.
        """
        parts = []
        for what, value, nbytes in copies:
            parts.append(f"its own copy of the {what} {value.name!r} shared with {_others(value, node)} "
                         f"(+{nbytes} bytes)")
            self.total += nbytes
        return "; ".join(parts)


def _others(value: ir.Value, node: ir.Node) -> str:
    return ", ".join(dict.fromkeys(label(u.node) for u in value.uses() if u.node is not node))


def _mib(n: int) -> str:
    return f"{n / 2**20:.3g} MiB"
