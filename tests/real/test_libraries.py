"""Models from transformers and segmentation_models_pytorch fold through their Conv2d subclasses.

transformers' EfficientNet builds its depthwise convs as ``EfficientNetDepthwiseConv2d(nn.Conv2d)``;
segmentation_models_pytorch's efficientnet encoders pad with ``Conv2dStaticSamePadding(nn.Conv2d)``.
Both are built offline from their configs (no weights), statistics randomized. The floor is
independent of normfold: every batch-norm module the forward calls (counted with forward hooks
on the original) is folded, and the ones not folded are exactly those it never calls; the folded
model equals the original in float64 as closely as the original fp32 model does.
"""
from __future__ import annotations

import os
import warnings

import pytest
import segmentation_models_pytorch as smp
import torch
import transformers
from torch import nn

import normfold
from normfold.zoo.populate import populate

from ..conftest import assert_equivalent_outputs, run_eager

pytestmark = pytest.mark.real
os.environ.setdefault("HF_HUB_OFFLINE", "1")


class _Tensor(nn.Module):
    """The model's first tensor output (transformers returns a ModelOutput, smp a tensor)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x):
        out = self.model(x)
        return out if isinstance(out, torch.Tensor) else out[0]


def _hf_efficientnet() -> nn.Module:
    from transformers.models.efficientnet.modeling_efficientnet import round_filters

    width = 0.5
    config = transformers.EfficientNetConfig(image_size=32, width_coefficient=width, depth_coefficient=0.5,
                                             hidden_dim=round_filters(transformers.EfficientNetConfig(
                                                 width_coefficient=width), 1280))
    return transformers.EfficientNetModel(config)


def _smp_unet() -> nn.Module:
    return smp.Unet("efficientnet-b0", encoder_weights=None, classes=2)


MODELS = {"hf-efficientnet": (_hf_efficientnet, "EfficientNetDepthwiseConv2d"),
          "smp-unet-efficientnet-b0": (_smp_unet, "Conv2dStaticSamePadding")}
SHAPE = (1, 3, 32, 32)


def _called_norms(model: nn.Module, x: torch.Tensor) -> set[str]:
    called, handles = set(), []
    for name, m in model.named_modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            handles.append(m.register_forward_hook(lambda *_, n=name: called.add(n)))
    with torch.no_grad():
        model(x)
    for h in handles:
        h.remove()
    return called


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_called_norm_folds_into_the_library_conv_subclass(name):
    build, subclass = MODELS[name]
    torch.manual_seed(0)
    model = _Tensor(populate(build(), (2, *SHAPE[1:]), steps=2)).eval()
    x = torch.randn(SHAPE, generator=torch.Generator().manual_seed(1))
    norms = {n for n, m in model.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)}
    called = _called_norms(model, x)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = normfold.fold(model, x)
    folded = {f.norm for f in result.report.folded}
    assert folded == called, sorted(called - folded)[:5]
    assert {s.norm for s in result.report.skipped} == norms - called
    into = {type(result.model.get_submodule(f.into)).__name__ for f in result.report.folded}
    assert subclass in into, into
    assert_equivalent_outputs(model, run_eager(result.model, x), x)
