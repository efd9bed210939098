"""Trust no class: check a norm's channel map against the module's own forward, in float64.

A class says what its map should be, not what its forward does: timm's
``BatchNormAct2d`` is an ``nn.BatchNorm2d`` whose forward also applies an
activation; a user's subclass may scale, shift or clamp. Before a map
``y = A x + c`` is folded, the module's eval forward runs on a probe input and
must agree with it:

    dev = max_i |f(x)_i - (A x + c)_i| / s_i,      s_i = (|A| |x| + |c|)_i

the error relative to the size of the terms the map sums. Float64 round-off
keeps ``dev`` near ``C * 2^-53``; anything above :data:`TOLERANCE` is a
different function.

A composite (``split.py``) is checked the same way against its parts,
``norm -> rest``: ``parts(x)`` and ``rest(A x + c)`` must both equal its
forward ``f(x)`` (relative to ``s_i + |f(x)_i|``): the first is what a call
whose norm stays computes, the second what a call whose norm folds computes.

The probe input has the traced shape shrunk to batch 1 and at most 2 positions
per spatial axis (a few hundred values; the traced shape itself if the module
rejects the small one). Its values are drawn in the map's *output*, ``z`` with
both signs and magnitudes from 0.1 to 1000 (``x = A^-1 (z - c)`` where A is
invertible), so an activation, a clamp or a threshold after the norm changes
some of them.

The module is never run itself: a float64 deep copy in eval mode is, so the
probe changes no state of the model being folded.
"""
from __future__ import annotations

import copy

import torch
from torch import nn

from ...nn._channels import channel_matrix, from_channel_matrix
from ..algebra import ChannelMap
from .trace import describe

TOLERANCE = 1e-9
SEED = 0


def small_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
    """Batch 1 (rank 2: at most 4 rows), at most 2 positions per spatial axis (rank 3: 4)."""
    if len(shape) == 2:
        return (min(shape[0], 4), shape[1])
    if len(shape) == 3:
        return (1, shape[1], min(shape[2], 4))
    return (1, shape[1], *(min(d, 2) for d in shape[2:]))


def map_reason(module: nn.Module, m: ChannelMap, shape: tuple[int, ...] | None, source: str) -> str | None:
    """Why ``module``'s forward is not the map ``m`` (``source`` names where the map came from), or None."""
    def compare(x, y, s, copies):
        return [_output(copies[0], x)], y, s

    return _check((module,), m, shape, compare, source,
                  "does it apply an activation, a scale or a shift of its own? register an adapter "
                  "(normfold.register_norm) or a composite (normfold.nn.register_composite), or split it")


def same_reason(original: nn.Module, parts: nn.Sequential, m: ChannelMap, shape: tuple[int, ...] | None) -> str | None:
    """Why ``parts`` do not compute ``original``'s forward, with or without their first part replaced by ``m``.

    Both must hold: a call whose norm folds computes ``rest(A x + c)``, one
    whose norm does not computes ``parts(x)``; a probe needs only one run of each.
    """
    def compare(x, y, s, copies):
        whole, split_up = copies
        want = _output(whole, x.clone())
        via_map = _output(split_up[1:], from_channel_matrix(y, x).contiguous())
        return [_output(split_up, x.clone()), via_map], want, s + want.abs()

    return _check((original, parts), m, shape, compare, f"its parts ({', '.join(parts._modules)})",
                  "its splitter does not describe it")


def _check(modules: tuple[nn.Module, ...], m: ChannelMap, shape: tuple[int, ...] | None, compare, what: str,
           advice: str) -> str | None:
    """Why the first of ``modules`` is not what ``compare`` expects on a probe input, or None.

    ``compare(x, y, s, copies)`` gets the probe input ``x`` (N, C, *S), the
    map's output ``y`` and the size ``s`` of its terms (as channel rows), and
    float64 eval copies of ``modules``; it returns the outputs (channel rows)
    that must agree, what they must agree with, and the scale of the error.
    """
    cls = type(modules[0]).__name__
    why = _shape_reason(cls, m, shape)
    if why is not None:
        return why
    try:   # one deepcopy: parts that share tensors or submodules with the module are copied once
        copies = [module.double().eval() for module in copy.deepcopy(modules)]
    except Exception as exc:  # a module that cannot be copied cannot be checked
        return f"{cls} cannot be copied to float64 for the probe: {describe(exc)}"
    device = _device(modules[0])

    def deviation(s: tuple[int, ...]) -> float:
        x, y, scale = _probe(m, s, device)
        gots, want, scale = compare(x, y, scale, copies)
        scale = scale.clamp_min(torch.finfo(torch.float64).tiny)
        return float(torch.stack([((got - want).abs() / scale).max() for got in gots]).max())   # NaN stays NaN

    result = _run(deviation, shape, cls)
    if isinstance(result, str):
        return result
    if not result <= TOLERANCE:  # NaN too
        return f"{cls}.forward differs from {what} by {result:.3g} (relative): {advice}"
    return None


def _shape_reason(cls: str, m: ChannelMap, shape) -> str | None:
    if shape is None:
        return f"the input shape of {cls} is unknown, so its map cannot be checked against its forward"
    if len(shape) < 2:
        return f"{cls} is called on a tensor of shape {tuple(shape)}, which has no channel axis"
    if shape[1] != m.channels:
        return f"{cls}'s map has {m.channels} channels, but its input {tuple(shape)} has {shape[1]} on axis 1"
    return None


def _run(deviation, shape: tuple[int, ...], cls: str) -> float | str:
    """``deviation(small shape)``, falling back to the traced shape; the reason on failure."""
    tries = [small_shape(shape)]
    if tuple(shape) != tries[0]:
        tries.append(tuple(shape))
    for s in tries:
        try:
            with torch.no_grad():
                return deviation(s)
        except Exception as exc:  # a module may reject any input; the last failure is the reason
            error = exc
    return f"{cls}.forward fails on a float64 probe input of shape {tries[-1]}: {describe(error)}"


def _device(module: nn.Module) -> torch.device:
    t = next(iter(module.parameters()), None)
    if t is None:
        t = next(iter(module.buffers()), None)
    return t.device if t is not None else torch.device("cpu")


def _probe(m: ChannelMap, shape: tuple[int, ...], device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(x, A x + c, s): the input of ``shape``, the map's output and the size of its terms as channel rows."""
    gen = torch.Generator().manual_seed(SEED)
    z = torch.randn(shape, generator=gen, dtype=torch.float64)
    z = channel_matrix(z * 10.0 ** (torch.rand(shape, generator=gen, dtype=torch.float64) * 4 - 1))
    a, c = m.a.cpu(), m.c.cpu()
    if m.diagonal:
        x = torch.where(a[:, None] != 0, (z - c[:, None]) / a[:, None], z)
    else:
        try:
            x = torch.linalg.solve(a, z - c[:, None])
        except RuntimeError:  # singular
            x = z
    if not bool(torch.isfinite(x).all()):
        x = z
    y = (a[:, None] * x if m.diagonal else a @ x) + c[:, None]
    s = (a.abs()[:, None] * x.abs() if m.diagonal else a.abs() @ x.abs()) + c.abs()[:, None]
    x = from_channel_matrix(x, torch.empty(shape, device="meta")).contiguous()
    return x.to(device), y.to(device), s.to(device)


def _output(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``module(x)`` as channel rows; it must keep the shape of ``x``."""
    shape = tuple(x.shape)
    out = module(x)
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != tuple(shape):
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(f"returned {got} for an input of shape {tuple(shape)}")
    return channel_matrix(out.double())
