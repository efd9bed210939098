"""Across channel-preserving layout ops: a channel map on one side of a Reshape is a channel map on the other.

A norm need not sit right after its layer: squeeze-excitation written with
BatchNorm1d is ``Conv 1x1 -> Flatten (or Squeeze) -> BatchNormalization`` on
(N, C), a classifier head ``BatchNormalization -> Flatten -> Gemm``. The
layout ops Reshape/Flatten/Squeeze/Unsqueeze/Identity move no element (they
keep the row-major order) and Transpose permutes axes, so when a layout op
carries the channel axis whole, the norm's map commutes with it:

    y = L(x),  z = A y (on axis j of y)   =>   z = L(A' x) (on axis i of x)

with the same (A, c). The proof is from static shapes: ``S`` the input's
shape at an analysed batch (batch 1 and 2 for a symbolic batch) and ``T`` the
output's, computed from ``S`` and the op's stored arguments (a Reshape's
constant target: the fold never trusts a shape it did not compute).

* Reshape, Flatten, Squeeze, Unsqueeze, Identity: axis i of ``S`` is axis j of
  ``T`` when ``S[i] == T[j]`` and ``prod(S[:i]) == prod(T[:j])``. The element
  at (p, c, q) of ``x`` (p indexing the axes before i, q those after) has flat
  index ``(p C + c) Q + q``; the sizes before and after agree (``Q`` is the same
  on both sides since the totals are), so it lands at (p, c, q) of ``y``: same
  channel c, and one position (p, q) of ``x`` is one position of ``y``.
* Transpose: axis j of ``T`` is axis ``perm[j]`` of ``S``.

It must hold with the same (i, j) at every analysed shape; a channel axis of
one element is not tracked (several axes could carry it). Anything else (an
axis merged with another, split, or a shape that is not static) is refused
with the reason.
"""
from __future__ import annotations

import math

import numpy as np
import onnx_ir as ir

from . import layout
from .graph import constant, label


def out_shape(node: ir.Node, version: int | None, shape: tuple[int, ...]) -> tuple[int, ...] | str:
    """The layout op's output shape for an input of ``shape`` (numbers), computed by the op on a
    zero-strided array of that shape (no memory), or why it does not apply."""
    x = np.lib.stride_tricks.as_strided(np.zeros(1), shape, (0,) * len(shape))
    attrs = {name: a.value for name, a in node.attributes.items()}
    try:
        return tuple(layout.apply(node.op_type, x, [constant(v) for v in node.inputs[1:]], attrs, version).shape)
    except Exception as exc:  # a target that does not fit: the graph would fail there too
        return f"{label(node)} ({node.op_type}) cannot reshape a {list(shape)} input ({type(exc).__name__})"


def translate(nodes: list[ir.Node], versions: list[int | None], shapes: list[tuple[int, ...]], axis: int,
              forward: bool) -> int | str:
    """The axis that carries the channels of ``axis`` across the layout ops ``nodes`` (in graph order;
    ``shapes``: the first one's input shape at each analysed batch): ``axis`` of the first input
    to an axis of the last output (``forward``), or of the last output back to the first input."""
    inputs = []
    for node, version in zip(nodes, versions):
        inputs.append(shapes)
        shapes = [out_shape(node, version, s) for s in shapes]
        why = next((t for t in shapes if isinstance(t, str)), None)
        if why is not None:
            return why
    steps = list(zip(nodes, versions, inputs))
    for node, version, ins in steps if forward else reversed(steps):
        outs = [out_shape(node, version, s) for s in ins]
        found = {_carried(node, s, t, axis, forward) for s, t in zip(ins, outs)}
        if len(found) != 1 or None in found:
            side, other = ("input", "output") if forward else ("output", "input")
            here, there = (ins[0], outs[0]) if forward else (outs[0], ins[0])
            return (f"the norm acts on axis {axis} of the {list(here)} {side} of {label(node)} ({node.op_type}), "
                    f"and no axis of its {list(there)} {other} carries those channels whole")
        axis = found.pop()
    return axis


def _carried(node: ir.Node, s: tuple, t: tuple, axis: int, forward: bool) -> int | None:
    src, dst = (s, t) if forward else (t, s)
    if not 0 <= axis < len(src) or src[axis] == 1:
        return None
    if node.op_type == "Transpose":
        perm = node.attributes["perm"].value if "perm" in node.attributes else list(range(len(s)))[::-1]
        return perm.index(axis) if forward else perm[axis]
    before = math.prod(src[:axis])
    hits = [j for j in range(len(dst)) if dst[j] == src[axis] and math.prod(dst[:j]) == before]
    return hits[0] if len(hits) == 1 else None
