"""ONNX ConvTranspose in numpy, any rank and any ``group``: the float64 oracle's own kernel.

``onnx.reference``'s ConvTranspose fails for ``group > 1`` (it reshapes the
whole weight as if there were one group), so the ONNX oracle evaluates every
ConvTranspose with this one instead (``new_ops`` of ReferenceEvaluator).

With X (N, C_in, *S), W (C_in, C_out/G, *K), G groups of C_in/G input and
C_out/G output channels, strides s, dilations d, output_padding p and pads
(b, e) per spatial axis, a transposed convolution scatters every input
position i through every kernel offset k:

    Y_full[n, g·C_out/G + o, i·s + k·d] += Σ_{c ∈ group g} X[n, c, i] · W[c, o, k]

    |Y_full| = (S − 1)·s + (K − 1)·d + 1 + p        per spatial axis
    Y = Y_full[..., b : |Y_full| − e] + B[o]

(one einsum per kernel offset, accumulated into a strided slice). When
``output_shape`` is given, or ``auto_pad`` is SAME_UPPER/SAME_LOWER (output
S·s), the pads follow from it as in the ONNX specification:
total = |Y_full| − out, SAME_UPPER puts total//2 at the beginning, the others
put total − total//2 there. A negative total pads Y_full with zeros.
"""
from __future__ import annotations

import itertools
from typing import Sequence

import numpy as np
from onnx.reference.op_run import OpRun


def conv_transpose(
    x: np.ndarray,
    w: np.ndarray,
    b: np.ndarray | None = None,
    *,
    strides: Sequence[int] | None = None,
    dilations: Sequence[int] | None = None,
    pads: Sequence[int] | None = None,
    output_padding: Sequence[int] | None = None,
    output_shape: Sequence[int] | None = None,
    auto_pad: str = "NOTSET",
    group: int = 1,
) -> np.ndarray:
    """ONNX ConvTranspose(x, w, b) with the operator's attributes (see the module docstring)."""
    n, c_in, *size = x.shape
    rank = len(size)
    kernel = w.shape[2:]
    strides = list(strides or [1] * rank)
    dilations = list(dilations or [1] * rank)
    output_padding = list(output_padding or [0] * rank)
    if c_in != w.shape[0] or c_in % group:
        raise ValueError(f"ConvTranspose: {c_in} input channels, weight {list(w.shape)}, group {group}")
    full = [(s - 1) * st + (k - 1) * d + 1 + p for s, st, k, d, p in zip(size, strides, kernel, dilations, output_padding)]
    begin, end = _pads(full, size, strides, pads, output_shape, auto_pad, rank)

    c_out_g = w.shape[1]
    xg = x.reshape(n, group, c_in // group, *size)
    wg = w.reshape(group, c_in // group, c_out_g, *kernel)
    y = np.zeros((n, group, c_out_g, *full), dtype=np.result_type(x, w))
    for offset in itertools.product(*(range(k) for k in kernel)):
        part = np.einsum("ngc...,gco->ngo...", xg, wg[(Ellipsis, *offset)])
        where = tuple(slice(k * d, k * d + (s - 1) * st + 1, st) for k, d, s, st in zip(offset, dilations, size, strides))
        y[(slice(None), slice(None), slice(None), *where)] += part
    y = y.reshape(n, group * c_out_g, *full)
    y = _crop(y, begin, end)
    if b is not None:
        y = y + b.reshape(1, -1, *([1] * rank))
    return y


def _pads(full, size, strides, pads, output_shape, auto_pad, rank) -> tuple[list[int], list[int]]:
    if output_shape is None and auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        output_shape = [s * st for s, st in zip(size, strides)]
    if output_shape is not None:
        output_shape = list(output_shape)[-rank:]
        total = [f - o for f, o in zip(full, output_shape)]
        if auto_pad == "SAME_UPPER":
            return [t // 2 for t in total], [t - t // 2 for t in total]
        return [t - t // 2 for t in total], [t // 2 for t in total]
    if pads is None or auto_pad == "VALID":
        return [0] * rank, [0] * rank
    return list(pads[:rank]), list(pads[rank:])


def _crop(y: np.ndarray, begin: list[int], end: list[int]) -> np.ndarray:
    """y[..., b : size − e] per spatial axis; negative pads extend with zeros."""
    widen = [(0, 0), (0, 0)] + [(max(-b, 0), max(-e, 0)) for b, e in zip(begin, end)]
    if any(w != (0, 0) for w in widen):
        y = np.pad(y, widen)
    index = tuple(slice(max(b, 0), y.shape[2 + i] - max(e, 0)) for i, (b, e) in enumerate(zip(begin, end)))
    return y[(slice(None), slice(None), *index)]


class ConvTranspose(OpRun):
    """ReferenceEvaluator op: replaces onnx.reference's ConvTranspose (wrong for group > 1)."""

    op_domain = ""

    def _run(self, X, W, B=None, auto_pad=None, dilations=None, group=None, kernel_shape=None,
             output_padding=None, output_shape=None, pads=None, strides=None):
        if kernel_shape is not None and tuple(kernel_shape) != tuple(W.shape[2:]):
            raise ValueError(f"ConvTranspose: kernel_shape {list(kernel_shape)} != weight {list(W.shape)}")
        auto = auto_pad.decode() if isinstance(auto_pad, bytes) else (auto_pad or "NOTSET")
        return (conv_transpose(X, W, B, strides=strides, dilations=dilations, pads=pads,
                               output_padding=output_padding, output_shape=output_shape,
                               auto_pad=auto, group=group or 1),)
