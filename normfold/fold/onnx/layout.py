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
        target = [int(d) for d in args[0]]
        if not attrs.get("allowzero", 0):
            target = [x.shape[i] if d == 0 else d for i, d in enumerate(target)]
        return x.reshape(target)
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
