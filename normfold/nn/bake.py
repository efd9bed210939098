"""Bake computed weights into plain modules before folding or export.

Weight normalization computes a layer's effective weight on every call
(torch's ``parametrize``-based ``weight_norm``/``spectral_norm``, normfold's
weight-standardized convs). At inference that weight is a constant, so it is
computed once and stored: the ONNX graph then holds a single Conv per layer,
and the fold pass sees a plain Conv it can fold into.

A module takes part by a ``baked()`` method returning an equivalent plain
module (e.g. ``WSConv2d.baked() -> nn.Conv2d``).
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import parametrize


@torch.no_grad()
def bake_weights(model: nn.Module) -> nn.Module:
    """Replace computed weights by constants, IN PLACE; call it on your own copy.

    Returns ``model`` (or its replacement, if ``model`` itself bakes).
    """
    for module in list(model.modules()):
        if parametrize.is_parametrized(module):
            _unparametrize(module)
    return _replace_baked(model)


def _unparametrize(module: nn.Module) -> None:
    """Store each parametrized tensor's current value as a plain Parameter.

    Not ``parametrize.remove_parametrizations``: it deletes the property from the
    module's dynamically created ``Parametrized*`` class, which ``copy.deepcopy``
    shares with the original, so baking a copy would break the caller's model.
    Here only this instance changes class.
    """
    values = {}
    for name, plist in module.parametrizations.items():
        original = getattr(plist, "original", None)
        requires_grad = original.requires_grad if isinstance(original, torch.Tensor) else True
        values[name] = (getattr(module, name).detach().clone(), requires_grad)
    module.__class__ = type(module).__bases__[0]
    del module._modules["parametrizations"]
    for name, (value, requires_grad) in values.items():
        setattr(module, name, nn.Parameter(value, requires_grad=requires_grad))


def _replace_baked(module: nn.Module) -> nn.Module:
    baked = getattr(module, "baked", None)
    if callable(baked):
        return baked()
    for name, child in list(module.named_children()):
        new = _replace_baked(child)
        if new is not child:
            setattr(module, name, new)
    return module
