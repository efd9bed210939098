"""One streaming pass over the data through a PyTorch model, reading norm layers' inputs with pre-hooks.

``collect(work, targets, batches)`` runs every batch through ``work`` (the
caller's float64 eval copy) with a forward pre-hook on each target layer that
merges the layer's input into its ``ChannelMoments``; the hooks are removed
afterwards. It returns the moments, the layers in the order they first ran
(execution order: a topological order of the norms), and how often each ran
per forward. With ``stop_at`` (a layer and its calls per forward), the forward
is cut short after that layer's last call (an exception raised from its hook,
caught here): a pass costs the forward up to the layer, not the whole model.

Refused with a RecalibrationError naming the layer: an input that is not
(N, C, ...) with the layer's C channels, NaN or infinite values in it; and
naming the batch: a forward that fails on the data (a shape or channel count
the model does not take).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .._messages import typed_line
from .conventions import Kept
from .data import Batches
from .errors import RecalibrationError
from .moments import ChannelMoments


@dataclass(frozen=True)
class Target:
    """A norm layer to read: its path in the model, the module (in the working copy), what it keeps."""
    path: str
    module: nn.Module
    spec: Kept

    @property
    def label(self) -> str:
        return f"{self.path or '(the model)'} ({type(self.module).__name__})"


class _Stop(Exception):
    """Raised from a hook to end a forward once the layer being measured has run."""


@dataclass
class Pass:
    moments: dict[str, ChannelMoments]
    order: list[str]                 # layers in the order they first ran
    calls: dict[str, int]            # calls per forward (the first batch's)
    samples: int


@torch.no_grad()
def collect(work: nn.Module, targets: list[Target], batches: Batches, *,
            stop_at: tuple[Target, int] | None = None) -> Pass:
    """Moments of every target's input over all batches (see the module docstring)."""
    moments = {t.path: ChannelMoments(t.spec.channels, t.spec.group_size) for t in targets}
    order: list[str] = []
    calls: dict[str, int] = {}
    state = {"batch": 0, "calls": {}}

    def hook_for(target: Target):
        def hook(module, args):
            x = args[0] if args else None
            _check_input(target, x, state["batch"])
            moments[target.path].update(x)
            n = state["calls"][target.path] = state["calls"].get(target.path, 0) + 1
            if target.path not in order:
                order.append(target.path)
            if stop_at is not None and stop_at[0].path == target.path and n >= stop_at[1]:
                raise _Stop
        return hook

    handles = [t.module.register_forward_pre_hook(hook_for(t)) for t in targets]
    samples = 0
    try:
        for b, batch in enumerate(batches()):
            state["batch"], state["calls"] = b, {}
            inputs = tuple(t.to(torch.float64) if t.is_floating_point() else t for t in batch)
            try:
                work(*inputs)
            except _Stop:
                pass
            except RecalibrationError:
                raise
            except Exception as exc:
                shapes = ", ".join(str(list(t.shape)) for t in batch)
                raise RecalibrationError(f"the model's forward fails on DATA batch {b} (inputs of shape {shapes}): "
                                         f"{typed_line(exc)}") from exc
            if b == 0:
                calls = dict(state["calls"])
            samples += len(batch[0]) if batch and batch[0].dim() else 0
    finally:
        for h in handles:
            h.remove()
    return Pass(moments, order, calls, samples)


def _check_input(target: Target, x, batch: int) -> None:
    channels = target.spec.channels
    if not isinstance(x, torch.Tensor) or x.dim() < 2 or x.shape[1] != channels:
        got = f"shape {list(x.shape)}" if isinstance(x, torch.Tensor) else type(x).__name__
        raise RecalibrationError(f"norm layer {target.label} keeps statistics of {channels} channels but got an "
                                 f"input of {got} on DATA batch {batch} (expected (N, {channels}, ...))")
    if not bool(torch.isfinite(x).all()):
        bad = int((~torch.isfinite(x)).sum())
        raise RecalibrationError(f"norm layer {target.label}: its input holds {bad} NaN or infinite values on "
                                 f"DATA batch {batch}: no statistics can be computed from them")
