"""A channel-mixing region's map, extracted numerically and proven position-independent.

A region is a stretch of Reshape/Transpose/Squeeze/Unsqueeze/Flatten/Identity,
MatMul, Add/Sub/Mul/Div and BatchNormalization nodes with constant operands
that starts and ends at the same shape ``(N, C, *spatial)``: what a whitening
layer exports to (``x - mu``, reshape into groups, ``W_g @ x_g``, reshape
back, scale and shift). Each op is affine in its one data input, so the region
is ``f(x) = L x + b`` for some linear ``L`` over the whole tensor. It is a
channel map when

    f(x)[n, :, p] = A x[n, :, p] + c        at every position (n, p)

The region is evaluated here in float64 (numpy, the ONNX semantics of those
ops; no runtime), on probes of its real input shape:

* ``x = 0`` gives ``c`` at every position; it must be the same at all of them.
* ``x = e_j`` at one position ``p_j`` (a different position for each j, as many
  per evaluation as there are positions) gives column ``A[:, j] = f(x)[:, p_j] - c``.
  Zeros stay exactly zero, so a block-diagonal A comes out block-diagonal.
* a random ``x`` (every position different) must satisfy the equation above at
  every position, to 1e-9 of its scale. A region that mixes positions (a
  transpose of H and W, a matmul over W), differs between positions, or reads
  across the batch fails this check: with probability one a random probe
  exposes it.

With a symbolic batch the map is extracted at batch 2 and must hold, by the
zero and the random probe, at batch 1 too: a map that depends on the batch
size fails there.
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np
import onnx_ir as ir
import torch

from ..algebra import ChannelMap
from .graph import attr, constant

TOLERANCE = 1e-9
LAYOUT_OPS = ("Reshape", "Transpose", "Squeeze", "Unsqueeze", "Flatten", "Identity")
ELEMENTWISE_OPS = ("Add", "Sub", "Mul", "Div")
REGION_OPS = (*LAYOUT_OPS, *ELEMENTWISE_OPS, "MatMul", "BatchNormalization")


def extract(nodes: tuple[ir.Node, ...], shapes: list[tuple[int, ...]], versions: dict[ir.Node, int]) -> ChannelMap | str:
    """The region's channel map on axis 1, or why it has none; ``shapes``: its input shape per analysed batch.

    The map is extracted at the largest shape (most positions per evaluation)
    and checked, with the zero and the random probe, at the others.
    """
    if any(len(s) < 2 for s in shapes):
        return f"its input has rank {len(shapes[0])}, so it has no channel axis"
    run = _program(nodes, versions)
    if isinstance(run, str):
        return run
    shapes = sorted((tuple(s) for s in shapes), key=math.prod, reverse=True)
    a = None
    for shape in shapes:
        got = _probe(run, shape, a)
        if isinstance(got, str):
            return got
        a, c = got
    a_t, c_t = torch.from_numpy(a), torch.from_numpy(c.copy())
    if not bool((a_t - torch.diag(torch.diagonal(a_t))).any()):
        return ChannelMap.of(torch.diagonal(a_t).clone(), c_t)
    return ChannelMap.of(a_t, c_t)


def _probe(run, shape: tuple[int, ...], a: np.ndarray | None) -> tuple[np.ndarray, np.ndarray] | str:
    """(A, c) of the region at ``shape``: extracted when ``a`` is None, else ``a`` checked there."""
    channels = shape[1]
    positions = math.prod(shape) // channels

    def f(x: np.ndarray) -> np.ndarray | str:
        try:
            y = run(x)
        except Exception as exc:  # a reshape that does not fit this shape, a broadcast that fails
            return f"it cannot be evaluated on a {list(shape)} input ({type(exc).__name__}: {exc})"
        if y.shape != x.shape:
            return f"it maps a {list(shape)} input to {list(y.shape)}, not to the same shape"
        return _columns(y)

    zero = f(np.zeros(shape))
    if isinstance(zero, str):
        return zero
    c = zero[:, 0]
    spread = np.abs(zero - c[:, None]).max()
    if not np.isfinite(zero).all() or spread > TOLERANCE * max(1.0, np.abs(c).max()):
        return f"its offset differs between positions (by {spread:.3g}): not the same channel map at every position"

    if a is None:
        a = np.empty((channels, channels))
        for start in range(0, channels, positions):
            cols = range(start, min(start + positions, channels))
            x = np.zeros((channels, positions))
            x[list(cols), range(len(cols))] = 1.0
            y = f(_tensor(x, shape))
            if isinstance(y, str):
                return y
            a[:, start:start + len(cols)] = y[:, :len(cols)] - c[:, None]

    x = np.random.default_rng(0).standard_normal((channels, positions))
    y = f(_tensor(x, shape))
    if isinstance(y, str):
        return y
    error = np.abs(y - (a @ x + c[:, None])).max()
    scale = (np.abs(a) @ np.abs(x) + np.abs(c)[:, None]).max()
    if not np.isfinite(a).all() or not np.isfinite(error) or error > TOLERANCE * max(scale, 1e-300):
        return (f"it is not the same channel map at every position of a {list(shape)} input (a random probe "
                f"misses A x + c by {error / max(scale, 1e-300):.2g} of its scale): it mixes or varies across positions")
    return a, c


def _columns(t: np.ndarray) -> np.ndarray:
    """(N, C, *s) -> (C, N * prod(s)): one column per position."""
    return np.moveaxis(t, 1, 0).reshape(t.shape[1], -1)


def _tensor(columns: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Inverse of :func:`_columns`."""
    moved = (shape[1], shape[0], *shape[2:])
    return np.moveaxis(columns.reshape(moved), 0, 1)


def _program(nodes, versions) -> Callable[[np.ndarray], np.ndarray] | str:
    steps = []
    for node in nodes:
        step = _step(node, versions.get(node))
        if isinstance(step, str):
            return step
        steps.append(step)

    def run(x):
        for step in steps:
            x = step(x)
        return x

    return run


def _step(node: ir.Node, version: int | None) -> Callable[[np.ndarray], np.ndarray] | str:
    """One node as a float64 numpy function of its data input (the ONNX definition of the op)."""
    op = node.op_type
    ins = list(node.inputs)
    consts = [None if v is None else constant(v) for v in ins]
    consts = [None if c is None else np.asarray(c, dtype=np.float64 if c.dtype.kind == "f" else c.dtype) for c in consts]
    if op in ELEMENTWISE_OPS:
        data = 0 if consts[0] is None else 1
        k = consts[1 - data]
        fn = {"Add": np.add, "Sub": np.subtract, "Mul": np.multiply, "Div": np.divide}[op]
        return (lambda x: fn(x, k)) if data == 0 else (lambda x: fn(k, x))
    if op == "MatMul":
        if consts[0] is None:
            w = consts[1]
            return lambda x: np.matmul(x, w)
        w = consts[0]
        return lambda x: np.matmul(w, x)
    if op == "Identity":
        return lambda x: x
    if op == "Reshape":
        target = consts[1].astype(np.int64)
        allowzero = attr(node, "allowzero", 0)

        def reshape(x):
            dims = [int(d) for d in target]
            if not allowzero:
                dims = [x.shape[i] if d == 0 else d for i, d in enumerate(dims)]
            return x.reshape(dims)
        return reshape
    if op == "Transpose":
        perm = attr(node, "perm", None)
        return lambda x: np.transpose(x, perm if perm is not None else tuple(reversed(range(x.ndim))))
    if op in ("Squeeze", "Unsqueeze"):
        if version is not None and version >= 13:
            axes = None if len(ins) < 2 or ins[1] is None else [int(a) for a in consts[1]]
        else:
            axes = attr(node, "axes", None)
        if op == "Squeeze":
            return lambda x: np.squeeze(x, axis=None if axes is None else tuple(axes))

        def unsqueeze(x):
            rank = x.ndim + len(axes)
            for a in sorted(a % rank for a in axes):
                x = np.expand_dims(x, a)
            return x
        return unsqueeze
    if op == "Flatten":
        axis = attr(node, "axis", 1)

        def flatten(x):
            k = axis % x.ndim if axis < 0 else axis
            return x.reshape(math.prod(x.shape[:k]), -1)
        return flatten
    if op == "BatchNormalization":
        scale, bias, mean, var = consts[1:5]
        eps = float(np.float32(attr(node, "epsilon", 1e-5)))

        def batchnorm(x):
            s = [1, -1] + [1] * (x.ndim - 2)
            return (x - mean.reshape(s)) / np.sqrt(var.reshape(s) + eps) * scale.reshape(s) + bias.reshape(s)
        return batchnorm
    return f"it holds {op}, which a region may not"
