"""The maps of single-node sites, read off the op's definition (exact, no probing).

BatchNormalization (inference: ``training_mode`` 0), on axis 1:

    y = scale (x - mean) / sqrt(var + eps) + B   =>   A = scale / sqrt(var + eps),  c = B - A mean

``eps`` is the float32 attribute, promoted exactly to float64.

Add/Sub/Mul/Div of the data ``x`` and a constant ``k``: numpy broadcasting
aligns ``k``'s dims with the *last* dims of ``x``. The map acts on the one axis
along which ``k`` has more than one element (``k`` of shape (C, 1, 1) on an
(N, C, H, W) tensor: axis 1; ``k`` of shape (C,): axis 3, the width); a
one-element ``k`` is a scalar map. Refused: a ``k`` that varies along two axes,
or that would enlarge the output (a dim of ``x`` that is 1 where ``k``'s is not).

    x + k: A = 1, c = k     x - k: A = 1, c = -k     k - x: A = -1, c = k
    x * k: A = k, c = 0     x / k: A = 1 / k, c = 0  (k / x is not affine: not a site)
"""
from __future__ import annotations

import numpy as np
import onnx_ir as ir
import torch

from ..algebra import ChannelMap
from .graph import attr, constant, label
from .maps import AxisMap
from .shapes import Shapes

BN_PARAMS = ("scale", "B", "input_mean", "input_var")


def batchnorm(node: ir.Node, version: int, shapes: Shapes) -> AxisMap | str:
    got = batchnorm_affine(node, version)
    if isinstance(got, str):
        return got
    a, c = got
    channels = a.shape[0]
    shape = shapes.of(node.inputs[0].name)
    if shape is not None and (len(shape) < 2 or (isinstance(shape[1], int) and shape[1] != channels)):
        return f"its input has shape {list(shape)}, which does not have {channels} channels on axis 1"
    return AxisMap(ChannelMap(torch.from_numpy(a), torch.from_numpy(c)), 1)  # float64 (C,): as .of would make


def batchnorm_affine(node: ir.Node, version: int) -> tuple[np.ndarray, np.ndarray] | str:
    """(A, c) of an inference-mode BatchNormalization as float64 (C,) arrays, or why it has none
    (a site of its own, or a step inside a region: the same checks either way)."""
    if attr(node, "training_mode", 0):
        return "training_mode=1: it normalizes with each batch's own statistics, which no weight can hold"
    if version == 7 and attr(node, "spatial", 1) != 1:
        return "spatial=0: its statistics are per element, not per channel"
    if any(o.uses() or o.is_graph_output() for o in node.outputs[1:]):
        return "its running mean/variance outputs are used"
    params = []
    for name, value in zip(BN_PARAMS, node.inputs[1:5]):
        k = constant(value)
        if k is None:
            what = "a graph input" if value is not None and value.is_graph_input() else "computed in the graph"
            return f"its {name} ({value.name if value is not None else 'missing'}) is {what}, not a stored constant"
        params.append(k)
    if any(k.ndim > 1 for k in params) or len({k.size for k in params}) != 1:
        return "its scale, B, mean and var are not all vectors of one length"
    scale, bias, mean, var = np.array([k.reshape(-1) for k in params], dtype=np.float64)  # one (4, C) copy
    denom = var + float(np.float32(attr(node, "epsilon", 1e-5)))
    if not (np.isfinite(denom) & (denom > 0)).all():
        i = int(np.flatnonzero(~(denom > 0) | ~np.isfinite(denom))[0])
        return f"input_var + epsilon is {float(denom[i]):.4g} at channel {i}: not a positive finite variance"
    a = scale / np.sqrt(denom)
    return a, bias - a * mean


def elementwise(node: ir.Node, data: int, shapes: Shapes) -> AxisMap | str:
    x = node.inputs[data].name
    k = np.asarray(constant(node.inputs[1 - data]), dtype=np.float64)
    shape = shapes.of(x)
    if shape is None:
        return shapes.require(x, label(node)) or "its input's rank is unknown"
    rank = len(shape)
    if k.ndim > rank:
        return (f"its constant of shape {list(k.shape)} has more dims than its rank-{rank} input: "
                "it broadcasts the output to a higher rank")
    aligned = (1,) * (rank - k.ndim) + k.shape
    varying = [i for i, d in enumerate(aligned) if d != 1]
    for i in varying:
        d = shape[i]
        if shapes.batchlike(shape, i):
            return (f"its constant of shape {list(k.shape)} varies along axis 0 of its {list(shape)} input, "
                    "the batch: not a map over the channels")
        if not isinstance(d, int):
            why = shapes.require(x, label(node))
            if why is not None:
                return why
        if d != aligned[i]:
            return (f"its constant of shape {list(k.shape)} broadcasts axis {i} of its {list(shape)} input "
                    f"from {d} to {aligned[i]}: the output is larger than the input")
    if len(varying) > 1:
        return (f"its constant of shape {list(k.shape)} varies along axes {', '.join(map(str, varying))} "
                f"of its {list(shape)} input: not a map over one axis")
    values = k.reshape(-1)
    a, c = _affine(node.op_type, data, values)
    if not np.isfinite(a).all():
        i = int(np.flatnonzero(~np.isfinite(a))[0])
        return f"it divides by {float(values[i]):.4g} (element {i} of its constant)"
    return AxisMap(ChannelMap(torch.from_numpy(a), torch.from_numpy(c)), varying[0] if varying else None)  # float64 (C,)


def _affine(op: str, data: int, k: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(A, c) as float64 arrays (numpy: a handful of tiny vectors, where torch's per-op cost dominates)."""
    one, zero = np.ones_like(k), np.zeros_like(k)
    if op == "Add":
        return one, k.copy()
    if op == "Sub":
        return (one, -k) if data == 0 else (-one, k.copy())
    if op == "Mul":
        return k.copy(), zero
    with np.errstate(divide="ignore"):
        return np.where(k == 0, np.inf, 1.0 / np.where(k == 0, 1.0, k)), zero  # Div: x / k
