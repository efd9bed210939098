"""Give a freshly built model (no weights downloaded) the statistics a trained one would have.

A fresh norm is the identity (mean 0, variance 1, gamma 1, beta 0): any fold of
it is exact, so a model straight from ``timm.create_model`` or torchvision
proves nothing about a fold. :func:`randomize_statistics` draws, seeded:

* every norm's affine ``weight`` ~ U(0.7, 1.3) and ``bias`` ~ N(0, 0.1²),
  parameters or buffers alike (FrozenBatchNorm keeps them as buffers);
* every Conv/Linear bias ~ N(0, 0.1²) (a zero bias would hide a fold that
  forgets ``b' = A b + c``), and a Conv/Linear weight that initialization
  left constant (torchvision's ViT zeroes its head) ~ N(0, 1/fan_in);
* every other parameter that initialization left constant and tiny, i.e. a
  layer scale (ConvNeXt's 1e-6, FastViT's 1e-5) or a zero gate (NFNet's
  skipinit gain) ~ U(0.3, 1): at init they mute their branch, and a wrong
  fold inside a muted branch would pass;
* every running statistic (any module with ``running_mean``/``running_var``
  buffers: torch's batch norms, timm's BatchNormAct2d and FrozenBatchNormAct2d,
  torchvision's FrozenBatchNorm2d) in units of the activations the norm really
  sees: one eval pass records each norm's per-channel input mean m and
  variance s² (the norms before it already randomized), then

      running_mean = m + 0.5·s·z,  z ~ N(0, 1)
      running_var  = s²·u,         u ~ U(0.3, 2)

  i.e. mean ~ N(0, 0.5²) and var ~ U(0.3, 2) in the units a trained norm
  would normalize. s² is floored at a tenth of the layer's mean over channels:
  late layers see few values per channel (1x1 maps of a small input), and a
  channel whose few values happened to agree would otherwise be amplified
  without bound on the next input. Drawn in absolute units instead (mean ~ N(0, 0.5²), var ~
  U(0.3, 2) whatever the activations), the outputs of randomly initialized
  deep nets grow to 1e9 (Inception-v3) or 1e16 (MobileOne-S0), and the error
  of a wrong fold in a small branch drowns under the output's scale. A norm
  the pass does not reach keeps the absolute draw.

The model is changed in place and returned; the global RNG is left as it was.
"""
from __future__ import annotations

import torch
from torch import nn

from normfold.nn import is_norm

AFFINE_WEIGHT = (0.7, 1.3)
BIAS_STD = 0.1
MEAN_STD = 0.5          # running_mean offset, in standard deviations of the norm's input
VAR_RATIO = (0.3, 2.0)  # running_var / observed variance
LAYER_SCALE = (0.3, 1.0)
VAR_FLOOR = 0.1         # observed variance floor, relative to the layer's mean over channels
TINY = 1e-2             # a constant parameter below this is a layer scale or a gate


def has_running_stats(module: nn.Module) -> bool:
    return all(isinstance(getattr(module, n, None), torch.Tensor) for n in ("running_mean", "running_var"))


@torch.no_grad()
def randomize_statistics(model: nn.Module, example_input: torch.Tensor, *, seed: int = 0) -> nn.Module:
    """Draw plausible norm statistics and affines (see the module docstring); returns ``model`` in eval mode."""
    gen = torch.Generator().manual_seed(seed)

    def uniform(shape, lo, hi):
        return lo + (hi - lo) * torch.rand(shape, generator=gen, dtype=torch.float64)

    def normal(shape, std):
        return std * torch.randn(shape, generator=gen, dtype=torch.float64)

    norms = [m for m in model.modules() if is_norm(m) or has_running_stats(m)]
    handled = set()
    for m in norms:
        for name in ("weight", "bias", "running_mean", "running_var"):
            t = getattr(m, name, None)
            if isinstance(t, torch.Tensor):
                handled.add(id(t))
        _set(getattr(m, "weight", None), lambda s: uniform(s, *AFFINE_WEIGHT))
        _set(getattr(m, "bias", None), lambda s: normal(s, BIAS_STD))
        if has_running_stats(m):
            m.running_mean.copy_(normal(m.running_mean.shape, MEAN_STD))
            m.running_var.copy_(uniform(m.running_var.shape, *VAR_RATIO))
    for m in model.modules():
        if isinstance(m, (nn.modules.conv._ConvNd, nn.Linear)):
            if isinstance(m.bias, torch.Tensor) and id(m.bias) not in handled:
                _set(m.bias, lambda s: normal(s, BIAS_STD))
                handled.add(id(m.bias))
            if _is_constant(m.weight):
                fan_in = m.weight[0].numel()
                m.weight.copy_(normal(m.weight.shape, fan_in ** -0.5))
            handled.add(id(m.weight))
    for p in model.parameters():
        if id(p) not in handled and _is_constant_and_tiny(p):
            p.copy_(uniform(p.shape, *LAYER_SCALE))

    model.eval()
    _calibrate(model, [m for m in norms if has_running_stats(m)], example_input, uniform, normal)
    return model


def _set(tensor, draw) -> None:
    if isinstance(tensor, torch.Tensor) and tensor.is_floating_point():
        tensor.copy_(draw(tensor.shape))


def _is_constant(p: torch.Tensor) -> bool:
    return p.is_floating_point() and p.numel() > 0 and bool((p == p.reshape(-1)[0]).all())


def _is_constant_and_tiny(p: torch.Tensor) -> bool:
    return _is_constant(p) and bool(p.reshape(-1)[0].abs() < TINY)


def _calibrate(model, norms, example_input, uniform, normal) -> None:
    """One eval pass; each norm's statistics are set from its input just before it runs."""
    done: set[int] = set()

    def pre_hook(module, args):
        if id(module) in done or not args or not isinstance(args[0], torch.Tensor) or args[0].dim() < 2:
            return
        done.add(id(module))
        x = args[0].detach().double().transpose(0, 1).reshape(args[0].shape[1], -1)
        if x.shape[0] != module.running_var.numel():
            return
        mean, var = x.mean(dim=1), x.var(dim=1, unbiased=False)
        floor = VAR_FLOOR * float(var.mean())
        var = var.clamp_min(floor) if floor > 0 else torch.ones_like(var)
        module.running_mean.copy_(mean + MEAN_STD * var.sqrt() * normal(mean.shape, 1.0))
        module.running_var.copy_(var * uniform(var.shape, *VAR_RATIO))

    handles = [m.register_forward_pre_hook(pre_hook) for m in norms]
    try:
        with torch.random.fork_rng():
            model(example_input)
    finally:
        for h in handles:
            h.remove()
