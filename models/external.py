"""Architectures no one here wrote: timm's and torchvision's, built in code, no weights downloaded.

The real test of a fold is a model someone else wrote. ``EXTERNAL`` lists, per
family, the smallest variant and a small input it accepts (64 px for most:
2x2 maps at stride 32, where zero-padded borders still matter). tests/real and
``scripts/real_models.py`` both take their models from here. ``build(name)``
returns it in eval mode with plausible statistics (``randomize_statistics``),
and ``example_input(name)`` a seeded input. timm and torchvision are imported
when a model is built, never at import time (they are test extras).

Variants ending in ``-frozen`` swap every batch norm for its frozen twin
(timm's ``freeze_batch_norm_2d``: FrozenBatchNorm2d / FrozenBatchNormAct2d;
torchvision's ``FrozenBatchNorm2d`` as a detection backbone uses it): the same
statistics kept as plain buffers by a class that is not a batch norm.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from .randomize import randomize_statistics

BATCH = 2
CALIBRATION_BATCH = 8   # inputs of the eval pass that sets the running statistics


@dataclass(frozen=True)
class ExternalModel:
    name: str                   # "<source>/<builder>[-variant]"
    source: str                 # "timm" or "torchvision"
    builder: str                # timm.create_model name or torchvision.models function
    family: str
    input_size: int             # H = W: a small size the model accepts
    kwargs: dict[str, Any] = field(default_factory=dict)
    frozen: bool = False        # every BatchNorm2d -> its frozen twin
    note: str = ""

    @property
    def input_shape(self) -> tuple[int, int, int, int]:
        return (BATCH, 3, self.input_size, self.input_size)


def _timm(builder: str, family: str, size: int = 64, note: str = "", **kwargs) -> ExternalModel:
    return ExternalModel(f"timm/{builder}", "timm", builder, family, size, kwargs, note=note)


def _tv(builder: str, family: str, size: int = 64, note: str = "", **kwargs) -> ExternalModel:
    return ExternalModel(f"torchvision/{builder}", "torchvision", builder, family, size, kwargs, note=note)


def _frozen(base: ExternalModel) -> ExternalModel:
    return ExternalModel(
        f"{base.name}-frozen", base.source, base.builder, base.family, base.input_size, base.kwargs, frozen=True,
        note="batch norms frozen (statistics as plain buffers)",
    )


TIMM = (
    _timm("efficientnet_b0", "EfficientNet"),
    _timm("mobilenetv3_small_050", "MobileNetV3"),
    _timm("mobilenetv4_conv_small_035", "MobileNetV4"),
    _timm("regnetx_002", "RegNet"),
    _timm("regnety_002", "RegNet", note="squeeze-excitation"),
    _timm("cs3darknet_s", "CSPDarknet"),
    _timm("densenet121", "DenseNet"),
    _timm("resnetv2_18", "ResNetV2", note="pre-activation"),
    _timm("inception_v3", "Inception", 75),
    _timm("ghostnet_050", "GhostNet"),
    _timm("ese_vovnet19b_slim_dw", "VoVNet"),
    _timm("rexnet_100", "ReXNet"),
    _timm("mixnet_s", "MixNet", note="mixed depthwise convs concatenated"),
    _timm("levit_128s", "LeViT", img_size=64),
    _timm("fastvit_t8", "FastViT"),
    _timm("mobilevit_xxs", "MobileViT"),
    _timm("convnext_atto", "ConvNeXt"),
    _timm("nf_regnet_b0", "NFNet", note="normalizer-free: no norm layers"),
    _timm("repvgg_a0", "RepVGG", note="parallel Conv-BN branches added"),
    _timm("mobileone_s0", "MobileOne"),
    _timm("hgnetv2_b0", "HGNetV2"),
    _timm("efficientvit_m0", "EfficientViT (MSRA)", img_size=64),
    _timm("efficientvit_b0", "EfficientViT (MIT)"),
    _timm("repvit_m0_9", "RepViT"),
    _timm("dla46_c", "DLA"),
    _timm("hrnet_w18_small", "HRNet"),
    _timm("skresnet18", "SKNet", note="selective kernel"),
    _timm("edgenext_xx_small", "EdgeNeXt"),
    _timm("inception_next_atto", "InceptionNeXt"),
    _timm("dpn48b", "DPN"),
    _timm("resnest14d", "ResNeSt", note="split attention"),
    _timm("resnet10t", "ResNet"),
    _timm("gernet_s", "GENet"),
    _timm("selecsls42b", "SelecSLS"),
    _timm("starnet_s050", "StarNet", note="element-wise product of two branches"),
    _timm("lcnet_050", "LCNet"),
)

TORCHVISION = (
    _tv("alexnet", "AlexNet", note="no norm layers"),
    _tv("convnext_tiny", "ConvNeXt"),
    _tv("densenet121", "DenseNet"),
    _tv("efficientnet_b0", "EfficientNet"),
    _tv("efficientnet_v2_s", "EfficientNetV2"),
    _tv("googlenet", "GoogLeNet", aux_logits=False, init_weights=True),
    _tv("inception_v3", "Inception-v3", 75, aux_logits=False, init_weights=True),
    _tv("maxvit_t", "MaxViT", 224),
    _tv("mnasnet0_5", "MNASNet"),
    _tv("mobilenet_v2", "MobileNetV2"),
    _tv("mobilenet_v3_small", "MobileNetV3"),
    _tv("regnet_y_400mf", "RegNet"),
    _tv("resnet18", "ResNet"),
    _tv("resnext50_32x4d", "ResNeXt"),
    _tv("shufflenet_v2_x0_5", "ShuffleNetV2"),
    _tv("squeezenet1_1", "SqueezeNet", note="no norm layers"),
    _tv("swin_t", "Swin"),
    _tv("vgg11_bn", "VGG"),
    _tv("vit_b_16", "ViT", 32, image_size=32),
    _tv("wide_resnet50_2", "Wide ResNet"),
)

# timm's FrozenBatchNormAct2d; torchvision's FrozenBatchNorm2d, as in its detection backbones
FROZEN = tuple(_frozen(m) for m in (*TIMM, *TORCHVISION) if m.name in ("timm/efficientnet_b0", "torchvision/resnet18"))

EXTERNAL: dict[str, ExternalModel] = {m.name: m for m in (*TIMM, *TORCHVISION, *FROZEN)}


def spec(name: str) -> ExternalModel:
    try:
        return EXTERNAL[name]
    except KeyError:
        raise KeyError(f"unknown external model {name!r}; available: {', '.join(EXTERNAL)}") from None


def build(name: str, *, seed: int = 0) -> nn.Module:
    """The named model: initialized with ``seed``, statistics randomized (seeded), eval mode."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = _construct(spec(name))
    calibration = example_input(name, seed=seed + 1, batch=CALIBRATION_BATCH)
    return randomize_statistics(model.eval(), calibration, seed=seed)


def example_input(name: str, *, seed: int = 0, batch: int = BATCH) -> torch.Tensor:
    """A seeded standard-normal input of the model's shape (``batch`` images)."""
    shape = (batch, *spec(name).input_shape[1:])
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def _construct(spec: ExternalModel) -> nn.Module:
    if spec.source == "timm":
        import timm

        model = timm.create_model(spec.builder, pretrained=False, **spec.kwargs)
        if spec.frozen:
            from timm.layers import freeze_batch_norm_2d

            model = freeze_batch_norm_2d(model)
        return model
    import torchvision.models as tvm

    kwargs = dict(spec.kwargs)
    if spec.frozen:
        from torchvision.ops.misc import FrozenBatchNorm2d

        kwargs["norm_layer"] = FrozenBatchNorm2d
    return getattr(tvm, spec.builder)(weights=None, **kwargs)
