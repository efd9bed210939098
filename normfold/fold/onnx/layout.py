"""The layout ops in numpy, as ONNX defines them: one implementation for the region evaluator
(``region.py``) and for folding reshapes of stored tensors (``load.py``).

``apply(op, x, args, attrs, version)``: ``x`` the data input, ``args`` the
other inputs (numpy arrays or None, by input position from 1), ``attrs`` the
node's attributes as Python values, ``version`` the op's since_version (Squeeze
and Unsqueeze take their axes as an input from version 13).
"""
from __future__ import annotations

import math

import numpy as np

OPS = ("Reshape", "Transpose", "Squeeze", "Unsqueeze", "Flatten", "Identity")


def apply(op: str, x: np.ndarray, args: list, attrs: dict, version: int | None) -> np.ndarray:
    if op == "Identity":
        return x
    if op == "Reshape":
        return x.reshape(reshaped(x.shape, args[0], attrs.get("allowzero", 0)))
    if op == "Transpose":
        return np.transpose(x, attrs.get("perm"))  # None: reversed, as in ONNX
    if op == "Flatten":
        axis = attrs.get("axis", 1)
        return x.reshape(math.prod(x.shape[:axis % x.ndim if axis < 0 else axis]), -1)
    if version is not None and version >= 13:
        axes = None if not args or args[0] is None else [int(a) for a in args[0]]
    else:
        axes = attrs.get("axes")
    if op == "Squeeze":
        return np.squeeze(x, axis=None if axes is None else tuple(axes))
    if op == "Unsqueeze":
        rank = x.ndim + len(axes)
        for a in sorted(a % rank for a in axes):
            x = np.expand_dims(x, a)
        return x
    raise ValueError(f"{op} is not a layout op")


def reshaped(shape: tuple[int, ...], target, allowzero: int = 0) -> tuple[int, ...]:
    """The output shape of ``Reshape(x of shape, target)``: a 0 copies the input's dim at that
    index (unless ``allowzero``), one -1 takes what is left. ValueError when it does not fit."""
    dims = [int(d) for d in np.asarray(target).reshape(-1)]
    if not allowzero:
        dims = [shape[i] if d == 0 and i < len(shape) else d for i, d in enumerate(dims)]
    size, known = math.prod(shape), math.prod(d for d in dims if d != -1)
    if dims.count(-1) == 1 and known > 0 and size % known == 0:
        dims[dims.index(-1)] = size // known
    if any(d < 0 for d in dims) or math.prod(dims) != size:
        raise ValueError(f"cannot reshape {list(shape)} to {[int(d) for d in np.asarray(target).reshape(-1)]}")
    return tuple(dims)
