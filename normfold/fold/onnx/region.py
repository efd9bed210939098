"""A channel-mixing region's map, extracted numerically and proven position-independent.

A region is a stretch of Reshape/Transpose/Squeeze/Unsqueeze/Flatten/Identity,
MatMul, Add/Sub/Mul/Div and BatchNormalization nodes with constant operands
that starts and ends at the same shape ``(N, C, *spatial)``: what a whitening
layer exports to (``x - mu``, reshape into groups, ``W_g @ x_g``, reshape
back, scale and shift). Each op is affine in its one data input, so the region
is ``f(x) = L x + b`` for some linear ``L`` over the whole tensor. It is a
channel map when

    f(x)[n, :, p] = A x[n, :, p] + c        at every position (n, p)

A region that is exactly the grouped product whitening layers export to,
``Reshape`` of ``(N, C, *spatial)`` to ``(N, G, C/G, P)``, ``MatMul(W, .)``,
``Reshape`` back, is read off its ops: a row-major reshape that splits C into
G groups of C/G and merges the positions, a product over the C/G axis alone
with one ``(C/G, C/G)`` matrix per group (or one for all), and the inverse
reshape are ``A = diag(W_1, ..., W_G)``, ``c = 0`` at every position and batch,
by the ops' definitions; the read must hold at every analysed shape.

Any other region is evaluated in float64 (numpy, with the ONNX semantics of
those ops; no runtime), on probes of its real input shape:

* a stretch of reshapes alone is guessed to be the identity (reshapes keep
  the elements' order), else (A, c) is extracted:
* ``x = e_j`` at one position ``p_j`` (a different position for each j, as many
  per evaluation as there are positions) gives column ``A[:, j] = f(x)[:, p_j] - c``,
  where ``c`` is ``f(x)`` at the positions where ``x = 0`` (the same at all of
  them). Zeros stay exactly zero, so a block-diagonal A comes out block-diagonal.
* a random ``x`` (every position different) must satisfy the equation above at
  every position, to 1e-9 of its scale. A region that mixes positions (a
  transpose of H and W, a matmul over W), differs between positions, or reads
  across the batch fails this check: with probability one a random probe
  exposes it.

With a symbolic batch the map is extracted at batch 2 and must hold, by a
random probe, at batch 1 too: a map that depends on the batch size fails there.
"""
from __future__ import annotations

import functools
import math
from typing import Callable

import numpy as np
import onnx_ir as ir
import torch

from ..._messages import error_line
from ..algebra import ChannelMap
from . import layout
from .graph import attr, constant, label
from .norms import batchnorm_affine

TOLERANCE = 1e-9
SMALL_PRODUCT = 2**18  # multiply-adds of one matrix product: OpenBLAS's threshold for threads (see _matmul)
LAYOUT_OPS = layout.OPS
ELEMENTWISE_OPS = ("Add", "Sub", "Mul", "Div")
ORDER_KEEPING = ("Reshape", "Squeeze", "Unsqueeze", "Flatten", "Identity")  # layout ops that keep the flat order


def extract(nodes: tuple[ir.Node, ...], shapes: list[tuple[int, ...]], versions: dict[ir.Node, int]) -> ChannelMap | str:
    """The region's channel map on axis 1, or why it has none; ``shapes``: its input shape per analysed batch.

    Read off the ops for the grouped product; else extracted in one evaluation
    at a batch large enough to hold a position for every column (when the
    region runs at that batch; else at the largest analysed shape, over several
    evaluations), then checked by the random probe at every analysed shape: the
    check, not the extraction, is the proof.
    """
    if any(len(s) < 2 for s in shapes):
        return f"its input has rank {len(shapes[0])}, so it has no channel axis"
    consts = {node: [constant(v) for v in node.inputs] for node in nodes}  # each stored input, read once
    shapes = sorted((tuple(s) for s in shapes), key=math.prod, reverse=True)
    read = [_grouped_product(nodes, shape, consts) for shape in shapes]
    if all(a is not None for a in read):
        return _channel_map(read[0], np.zeros(shapes[0][1]))
    run = _program(nodes, versions, consts)
    if isinstance(run, str):
        return run
    wide = (-(-shapes[0][1] // math.prod(shapes[0][2:])), *shapes[0][1:])  # room for every column at once
    why = ""
    # a stretch of reshapes is guessed to be the identity; else the map is extracted at the wide batch,
    # and where the region is tied to its batch size (it fails there) at the largest analysed batch.
    # The random probes decide.
    attempts = []
    if all(n.op_type in ORDER_KEEPING for n in nodes):
        attempts.append(lambda: (np.eye(shapes[0][1]), np.zeros(shapes[0][1])))
    if wide[0] > shapes[0][0]:
        attempts.append(lambda: _extract(run, wide))
    attempts.append(lambda: _extract(run, shapes[0]))
    for attempt in attempts:
        got = attempt()
        if isinstance(got, str):
            why = got
            continue
        a, c = got
        bound = np.abs(a).sum(1).max()  # |A x| <= bound * max |x|
        why = next((w for w in (_check(run, shape, a, c, bound) for shape in shapes) if w is not None), None)
        if why is None:
            return _channel_map(a, c)
    return why


def _channel_map(a: np.ndarray, c: np.ndarray) -> ChannelMap:
    if not (a - np.diag(np.diagonal(a))).any():
        return ChannelMap.of(torch.from_numpy(np.diagonal(a).copy()), torch.from_numpy(c))
    return ChannelMap.of(torch.from_numpy(a), torch.from_numpy(c))


def _grouped_product(nodes: tuple[ir.Node, ...], shape: tuple[int, ...], consts) -> np.ndarray | None:
    """A of ``Reshape`` to ``(N, G, C/G, P)`` (or ``(N, C, P)``), ``MatMul(W, .)`` with ``W`` one
    ``(C/G, C/G)`` block or one per group, ``Reshape`` back, at an input of ``shape``:
    ``diag(W_1, ..., W_G)``; None for anything else, or where the reshapes do not fit ``shape``."""
    if [n.op_type for n in nodes] != ["Reshape", "MatMul", "Reshape"]:
        return None
    first, product, last = nodes
    w, target, back = consts[product][0], consts[first][1], consts[last][1]
    if w is None or target is None or back is None or product.inputs[1] is not first.outputs[0] or w.ndim < 2:
        return None
    try:
        grouped = layout.reshaped(shape, target, attr(first, "allowzero", 0))
        if layout.reshaped(grouped, back, attr(last, "allowzero", 0)) != shape:
            return None
    except ValueError:
        return None
    channels, positions = shape[1], math.prod(shape[2:])
    if len(grouped) == 3:
        grouped = (grouped[0], 1, *grouped[1:])
    n, groups, size, p = grouped if len(grouped) == 4 else (None,) * 4
    if (n, groups * size, p) != (shape[0], channels, positions) or w.shape[-2:] != (size, size):
        return None
    lead = (1,) * (4 - w.ndim) + w.shape[:-2]  # W's dims for (N, G): one matrix for every sample
    if w.ndim > 4 or lead[0] != 1 or lead[1] not in (1, groups) or w.dtype.kind != "f":
        return None
    blocks = np.broadcast_to(w.reshape(lead[1], size, size), (groups, size, size)).astype(np.float64)
    a = np.zeros((channels, channels))
    for g in range(groups):
        a[g * size:(g + 1) * size, g * size:(g + 1) * size] = blocks[g]
    return a


def _evaluate(run, x: np.ndarray) -> np.ndarray | str:
    """The region on ``x``, or why it cannot be evaluated there."""
    try:
        y = run(x)
    except Exception as exc:  # a reshape that does not fit this shape, a broadcast that fails
        return f"it cannot be evaluated on a {list(x.shape)} input ({type(exc).__name__}: {error_line(exc)})"
    if y.shape != x.shape:
        return f"it maps a {list(x.shape)} input to {list(y.shape)}, not to the same shape"
    return y


def _extract(run, shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray] | str:
    """(A, c) of the region at ``shape``: column j of A from ``x = e_j`` at one position, c where ``x = 0``."""
    channels = shape[1]
    positions = math.prod(shape) // channels
    # columns j at positions j, zeros elsewhere: the zero positions give c (all of them the same),
    # in the same evaluation when there are more positions than channels
    starts = list(range(0, channels, positions))
    cols = []
    for start in starts if positions > channels else [None, *starts]:
        x = np.zeros((channels, positions))
        if start is not None:
            count = min(positions, channels - start)
            x[np.arange(start, start + count), np.arange(count)] = 1.0
        y = _evaluate(run, _tensor(x, shape))
        if isinstance(y, str):
            return y
        cols.append(_columns(y))
    zero = cols[0][:, channels:] if positions > channels else cols.pop(0)
    c = zero[:, 0].copy()
    spread = np.abs(zero - c[:, None]).max()
    if not np.isfinite(zero).all() or spread > TOLERANCE * max(1.0, np.abs(c).max()):
        return f"its offset differs between positions (by {spread:.3g}): not the same channel map at every position"
    a = np.concatenate([y[:, :min(positions, channels - start)] for y, start in zip(cols, starts)], axis=1)
    a -= c[:, None]
    return a, c


def _check(run, shape: tuple[int, ...], a: np.ndarray, c: np.ndarray, bound: float) -> str | None:
    """Why ``y = A x + c`` does not hold at every position of a random ``shape`` input, or None.

    ``x`` differs at every position, so a region that is not this channel map
    at some position (a wrong A or c, a mix of positions) misses it there, with
    probability one.
    """
    x, biggest = _random(shape)  # read only
    y = _evaluate(run, x)
    if isinstance(y, str):
        return y
    flat = (shape[0], shape[1], -1)  # (N, C, P): A acts on axis 1 of each sample
    miss = _matmul(a, x.reshape(flat))
    miss += c[:, None]
    miss -= y.reshape(flat)
    error = float(np.abs(miss, out=miss).max())
    scale = max(bound * biggest + np.abs(c).max(), 1e-300)
    if not np.isfinite(a).all() or not math.isfinite(error) or error > TOLERANCE * scale:
        return (f"it is not the same channel map at every position of a {list(shape)} input (a random probe "
                f"misses A x + c by {error / scale:.2g} of its scale): it mixes or varies across positions")
    return None


def _matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a @ b`` (numpy's broadcasting, ONNX's MatMul) in float64: numpy for small matrices;
    torch's GEMM (one thread in the pass) for large ones, which numpy's OpenBLAS spreads over
    threads that on busy cores cost several times the product (torch's float64 GEMM costs about
    20 us to start, numpy's 2)."""
    if a.ndim < 2 or b.ndim < 2 or a.shape[-2] * a.shape[-1] * b.shape[-1] < SMALL_PRODUCT:
        return np.matmul(a, b)
    return torch.matmul(torch.from_numpy(a), torch.from_numpy(b)).numpy()


@functools.lru_cache(maxsize=16)
def _random(shape: tuple[int, ...]) -> tuple[np.ndarray, float]:
    """A fixed random probe of ``shape``, and its largest magnitude (kept for the next region of that
    shape: a network repeats its shapes; a few, since a probe can be megabytes)."""
    x = np.random.default_rng(0).standard_normal(shape)
    return x, float(np.abs(x).max())


def _columns(t: np.ndarray) -> np.ndarray:
    """(N, C, *s) -> (C, N * prod(s)): one column per position."""
    return t.swapaxes(0, 1).reshape(t.shape[1], -1)


def _tensor(columns: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Inverse of :func:`_columns`."""
    return columns.reshape(shape[1], shape[0], *shape[2:]).swapaxes(0, 1)


def _program(nodes, versions, consts) -> Callable[[np.ndarray], np.ndarray] | str:
    steps = []
    for node in nodes:
        step = _step(node, versions.get(node), consts[node])
        if isinstance(step, str):
            return step
        steps.append(step)

    def run(x):
        for step in steps:
            x = step(x)
        return x

    return run


def _step(node: ir.Node, version: int | None, consts: list) -> Callable[[np.ndarray], np.ndarray] | str:
    """One node as a float64 numpy function of its data input (the ONNX definition of the op:
    ONNX broadcasting and MatMul are numpy's). numpy, not torch, because torch's matmul of a
    broadcast weight copies it once per sample."""
    op = node.op_type
    if op in ELEMENTWISE_OPS:
        data = 0 if consts[0] is None else 1
        k = np.asarray(consts[1 - data], dtype=np.float64)
        fn = {"Add": np.add, "Sub": np.subtract, "Mul": np.multiply, "Div": np.divide}[op]
        return (lambda x: fn(x, k)) if data == 0 else (lambda x: fn(k, x))
    if op == "MatMul":
        data = 0 if consts[0] is None else 1
        w = consts[1 - data].astype(np.float64)  # a writable copy: torch reads it in _matmul
        return (lambda x: _matmul(x, w)) if data == 0 else (lambda x: _matmul(w, x))
    if op in layout.OPS:
        attrs = {name: a.value for name, a in node.attributes.items()}
        return lambda x: layout.apply(op, x, consts[1:], attrs, version)
    if op == "BatchNormalization":
        got = batchnorm_affine(node, version)  # the checks of a BatchNormalization site of its own
        if isinstance(got, str):
            return f"its {label(node)}: {got}"
        a, c = got

        def batchnorm(x):
            s = [1, -1] + [1] * (x.ndim - 2)
            return x * a.reshape(s) + c.reshape(s)
        return batchnorm
    return f"it holds {op}, which a region may not"

