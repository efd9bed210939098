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


class _RTDETRHead(nn.Module):
    """Ultralytics' RT-DETR decoder (the part of RT-DETR-l with the query TopK and the cached anchors) on three
    levels of one feature map: small enough for CI, the same code as ``RTDETRDetectionModel("rtdetr-l.yaml")``'s
    head."""

    def __init__(self):
        super().__init__()
        from ultralytics.nn.modules.head import RTDETRDecoder

        self.decoder = RTDETRDecoder(nc=8, ch=(16, 16, 16), hd=32, nq=30, ndp=2, nh=2, ndl=2, d_ffn=64)

    def forward(self, x):
        return self.decoder([x, nn.functional.avg_pool2d(x, 2), nn.functional.avg_pool2d(x, 4)])


def test_rtdetr_decoder_folds_exports_and_verifies(tmp_path):
    """The decoder caches its anchors in forward: the fold's shape propagation on fake tensors must not leave
    fake anchors in the folded model (it returned fake tensors, and verify failed), and its TopK outputs are
    compared row-matched."""
    torch.manual_seed(0)
    model = populate(_RTDETRHead(), (2, 16, 16, 16), steps=2).eval()
    x = torch.randn(1, 16, 16, 16, generator=torch.Generator().manual_seed(1))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = normfold.export(model, x, tmp_path / "m.onnx")
        report = normfold.verify(model, result.path, x)
    assert report.ok, str(report)
    assert len(result.fold_report.folded) >= 3
    assert any("computed through TopK" in n for n in report.notes)
    assert {c.run for c in report.checks} >= {"folded_fp32", "onnx_cpu"}
