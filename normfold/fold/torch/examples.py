"""Example inputs the fold can run on, checked before tracing: a bad call is one clear FoldError.

The fold pass traces the model and propagates the example inputs' shapes
through it; given nothing, the wrong number of inputs, an empty tensor, or a
model without values (the meta device), torch fails deep inside with a message
about graph nodes. Refused up front, naming the problem:

* no example inputs at all;
* more or fewer inputs than ``forward`` takes (its signature, where Python can read it);
* a tensor with no elements (a zero-size axis);
* tensors or model weights on the meta device (shapes without values: nothing to fold).

Inputs of the wrong shape are found by shape propagation itself, whose
FoldError names the module's own complaint (``shapes``: the root cause).
"""
from __future__ import annotations

import inspect
from typing import Any

import torch
from torch import nn
from torch.utils._pytree import tree_leaves

from ..errors import FoldError


def check_example_inputs(model: nn.Module, inputs: tuple[Any, ...]) -> None:
    """FoldError naming the first problem (see the module docstring), or None."""
    cls = type(model).__name__
    if len(inputs) == 0:
        raise FoldError(f"example_inputs is empty: give the tensor (or tuple of tensors) {cls}.forward takes")
    _check_arity(model, inputs)
    for i, t in enumerate(t for t in tree_leaves(inputs) if isinstance(t, torch.Tensor)):
        if t.numel() == 0:
            raise FoldError(f"example input {i} has shape {tuple(t.shape)}, which holds no elements")
        if t.is_meta:
            raise FoldError(f"example input {i} is on the meta device (a shape without values); give a real tensor")
    meta = next((name for name, p in [*model.named_parameters(), *model.named_buffers()] if p.is_meta), None)
    if meta is not None:
        raise FoldError(f"{cls}'s {meta} is on the meta device (no values, nothing to fold): load its weights "
                        "first, e.g. with load_state_dict(..., assign=True) or to_empty() and a checkpoint")


def _check_arity(model: nn.Module, inputs: tuple[Any, ...]) -> None:
    try:
        sig = inspect.signature(model.forward)
    except (TypeError, ValueError):
        return   # a forward Python cannot describe: shape propagation will say
    try:
        sig.bind(*inputs)
    except TypeError as exc:
        raise FoldError(f"{type(model).__name__}.forward{sig} cannot take the {len(inputs)} example input"
                        f"{'s' if len(inputs) != 1 else ''} given: {exc}") from None
