"""Every zoo entry: deterministic, statistics really estimated, right shapes, right norm layers."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from normfold import fold
from normfold.nn import create_norm, is_norm
from normfold.zoo import DEFAULT, ZOO, build
from normfold.zoo.mobilenetv2 import InvertedResidual
from normfold.zoo.preact_resnet import PreActBlock
from normfold.zoo.resnet import BasicBlock, Bottleneck

REQUIRED = [
    *(f"resnet18-{n}" for n in ("bn", "center", "iternorm", "zca", "cholesky")),
    "resnet50-bn", "mobilenetv2-bn", "vgg11-bn", "preact_resnet18-bn", "convnext-ln",
]
NAMES = sorted(ZOO)


def unpopulated(name: str, seed: int = 0) -> nn.Module:
    """The same architecture and seed as ``build(name, small=True)``, straight from initialization."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        from normfold.zoo import SMALL_WIDTH

        return ZOO[name].factory(width_mult=SMALL_WIDTH)


def test_registry_has_the_required_names_and_default():
    assert set(REQUIRED) <= set(ZOO)
    assert DEFAULT in ZOO
    for name, entry in ZOO.items():
        assert entry.name == name and name.endswith(f"-{entry.norm}")


def test_unknown_name_lists_the_available_ones():
    with pytest.raises(KeyError, match="resnet18-bn"):
        build("resnet19-bn")


@pytest.mark.parametrize("name", NAMES)
def test_same_seed_same_model_other_seed_other_model(name, small_model):
    a = small_model(name).state_dict()
    b = build(name, seed=0, small=True).state_dict()     # built afresh, not the cached one
    c = small_model(name, 1).state_dict()
    assert a.keys() == b.keys() == c.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    floating = [k for k in a if a[k].is_floating_point()]
    assert any(not torch.equal(a[k], c[k]) for k in floating)


@pytest.mark.parametrize("name", NAMES)
def test_statistics_and_affine_parameters_are_not_at_initialization(name, small_model):
    fresh = dict(unpopulated(name).named_modules())
    norms = [(n, m) for n, m in small_model(name).named_modules() if is_norm(m)]
    assert norms
    for layer, m in norms:
        init = fresh[layer]
        tensors = [(k, t) for k, t in [*m.named_buffers(recurse=False), *m.named_parameters(recurse=False)]
                   if t.is_floating_point() and t.numel()]
        assert tensors, f"{layer} has neither statistics nor affine parameters"
        for key, t in tensors:
            ref = getattr(init, key)
            assert not torch.allclose(t, ref), f"{name}: {layer}.{key} is still at its initial value"


@pytest.mark.parametrize("name", NAMES)
def test_small_variant_output_shape_and_eval_mode(name, small_model):
    model = small_model(name)
    assert not model.training
    x = torch.randn(ZOO[name].small_shape)
    with torch.no_grad():
        assert model(x).shape == (x.shape[0], 1000)


@pytest.mark.parametrize("name", ["resnet18-bn", DEFAULT])
def test_full_size_model_takes_the_registered_input_shape(name):
    model = build(name)
    with torch.no_grad():
        y = model(torch.randn(ZOO[name].input_shape))
    assert y.shape == (ZOO[name].input_shape[0], 1000)
    assert torch.isfinite(y).all()


@pytest.mark.parametrize("name", NAMES)
def test_every_norm_layer_is_the_one_the_name_says(name, small_model):
    expected = type(create_norm(ZOO[name].norm, 16))
    kinds = {type(m) for m in small_model(name).modules() if is_norm(m)}
    assert kinds == {expected}


def _count(model, kind):
    return sum(isinstance(m, kind) for m in model.modules())


def test_architectures_have_the_published_block_structure(small_model):
    # ResNet-18: 2+2+2+2 basic blocks; ResNet-50: 3+4+6+3 bottlenecks; VGG-11: 8 convs;
    # MobileNetV2: 17 inverted residuals, each with one depthwise 3x3 (plus the stem's none).
    assert _count(small_model("resnet18-bn"), BasicBlock) == 8
    r50 = small_model("resnet50-bn")
    assert _count(r50, Bottleneck) == 16 and _count(r50, BasicBlock) == 0
    assert r50.fc.in_features == 4 * r50.layer4[0].conv1.out_channels
    assert _count(small_model("vgg11-bn"), nn.Conv2d) == 8
    mb = small_model("mobilenetv2-bn")
    assert _count(mb, InvertedResidual) == 17
    depthwise = [m for m in mb.modules() if isinstance(m, nn.Conv2d) and m.groups > 1]
    assert len(depthwise) == 17 and all(m.groups == m.in_channels == m.out_channels for m in depthwise)


def test_preact_blocks_run_norm_then_relu_then_conv(small_model):
    model = small_model("preact_resnet18-bn")
    blocks = [m for m in model.modules() if isinstance(m, PreActBlock)]
    assert len(blocks) == 8
    for block in blocks:
        calls = []
        hooks = [m.register_forward_hook(lambda m, i, o, name=n: calls.append(name))
                 for n, m in block.named_children()]
        with torch.no_grad():
            block(torch.randn(2, block.bn1.num_features, 8, 8))
        for h in hooks:
            h.remove()
        assert calls[:2] == ["bn1", "relu"], calls
        assert calls.index("bn1") < calls.index("conv1") < calls.index("bn2") < calls.index("conv2")


def test_convnext_layernorms_are_reported_not_foldable(small_model):
    model = small_model("convnext-ln")
    norms = [n for n, m in model.named_modules() if is_norm(m)]
    report = fold(model, torch.randn(2, 3, 32, 32)).report
    assert report.folded == []
    assert sorted(s.norm for s in report.skipped) == sorted(norms)
    assert all("not foldable" in s.reason for s in report.skipped)
