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
import math

import torch
from torch import nn

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
    cls = type(module).__name__
    why = _shape_reason(cls, m, shape)
    if why is not None:
        return why
    result = _run(lambda s: _map_deviation(module, m, s), shape, cls)
    if isinstance(result, str):
        return result
    if not result <= TOLERANCE:  # NaN too
        return (f"{cls}.forward differs from {source} by {result:.3g} (relative): does it apply an activation, "
                "a scale or a shift of its own? register an adapter (normfold.register_norm) or a composite "
                "(normfold.nn.register_composite), or split it")
    return None


def same_reason(original: nn.Module, parts: nn.Module, m: ChannelMap, shape: tuple[int, ...] | None) -> str | None:
    """Why ``parts`` (whose first part has the map ``m``) do not compute ``original``'s forward, or None."""
    cls = type(original).__name__
    why = _shape_reason(cls, m, shape)
    if why is not None:
        return why
    result = _run(lambda s: _parts_deviation(original, parts, m, s), shape, cls)
    if isinstance(result, str):
        return result
    if not result <= TOLERANCE:
        names = ", ".join(parts._modules)
        return (f"{cls}.forward differs from its parts ({names}) by {result:.3g} (relative): "
                "its splitter does not describe it")
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


def _double_copy(module: nn.Module) -> nn.Module:
    return copy.deepcopy(module).double().eval()


def _device(module: nn.Module) -> torch.device:
    t = next(iter(module.parameters()), None)
    if t is None:
        t = next(iter(module.buffers()), None)
    return t.device if t is not None else torch.device("cpu")


def _channels_first(xm: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """(C, positions) -> a tensor of ``shape`` (N, C, *S)."""
    return xm.reshape(shape[1], shape[0], *shape[2:]).transpose(0, 1).contiguous()


def _channel_rows(x: torch.Tensor) -> torch.Tensor:
    """(N, C, *S) -> (C, positions)."""
    return x.transpose(0, 1).reshape(x.shape[1], -1)


def _probe(m: ChannelMap, shape: tuple[int, ...], device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(x, A x + c, s) as (C, positions) rows: the input, the map's output, the size of its terms."""
    gen = torch.Generator().manual_seed(SEED)
    n = math.prod(shape) // shape[1]
    z = torch.randn(shape[1], n, generator=gen, dtype=torch.float64)
    z = z * 10.0 ** (torch.rand(shape[1], n, generator=gen, dtype=torch.float64) * 4 - 1)
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
    return x.to(device), y.to(device), s.to(device)


def _output(module: nn.Module, x: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    out = module(x)
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != tuple(shape):
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(f"returned {got} for an input of shape {tuple(shape)}")
    return _channel_rows(out.double())


def _map_deviation(module: nn.Module, m: ChannelMap, shape: tuple[int, ...]) -> float:
    device = _device(module)
    x, y, s = _probe(m, shape, device)
    got = _output(_double_copy(module), _channels_first(x, shape), shape)
    return float(((got - y).abs() / s.clamp_min(torch.finfo(torch.float64).tiny)).max())


def _parts_deviation(original: nn.Module, parts: nn.Module, m: ChannelMap, shape: tuple[int, ...]) -> float:
    device = _device(original)
    x, _, s = _probe(m, shape, device)
    x = _channels_first(x, shape)
    want = _output(_double_copy(original), x.clone(), shape)
    got = _output(_double_copy(parts), x.clone(), shape)
    scale = (s + want.abs()).clamp_min(torch.finfo(torch.float64).tiny)
    return float(((got - want).abs() / scale).max())
