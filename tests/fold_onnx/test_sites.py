"""One named case per site the ONNX pass folds: the ops left, the report, and the folded graph
against a float64 evaluation of the original (tests/fold_onnx/_oracle.py)."""
from __future__ import annotations

import collections
from dataclasses import dataclass, field

import numpy as np
import onnx
import pytest

import normfold

from ._graphs import Graph
from ._oracle import assert_equivalent, feeds_for


@dataclass
class Case:
    model: onnx.ModelProto
    left: dict[str, int]                      # op type -> count in the folded graph
    rules: set[str] = field(default_factory=set)   # rules of the folds
    notes: tuple[str, ...] = ()               # substrings of some fold's note
    skipped: tuple[str, ...] = ()             # substrings of skip reasons, one per skipped site
    kwargs: dict = field(default_factory=dict)


def conv_bn():
    g = Graph((2, 3, 8, 8))
    y = g.bn(g.conv(g.x, 3, 8), 8)
    return Case(g.build(g.op("Relu", [y])), {"Conv": 1, "Relu": 1}, {"conv-backward"})


def conv_no_bias_bn():
    g = Graph((2, 3, 8, 8))
    y = g.bn(g.conv(g.x, 3, 8, bias=False, strides=[2, 2], dilations=[1, 1]), 8)
    return Case(g.build(y), {"Conv": 1}, {"conv-backward"})


def conv_transpose_bn(groups):
    def build():
        g = Graph((2, 4, 5, 5))
        cout = 8 if groups < 4 else 4
        w = g.const(g.randn(4, cout // groups, 3, 3, scale=0.3))
        y = g.op("ConvTranspose", [g.x, w, g.const(g.randn(cout))], group=groups, strides=[2, 2],
                 pads=[1, 1, 1, 1], output_padding=[1, 1], kernel_shape=[3, 3])
        return Case(g.build(g.bn(y, cout)), {"ConvTranspose": 1}, {"conv-transpose-backward"})
    return build


def gemm_bn(trans_a, trans_b, alpha, beta):
    def build():
        g = Graph((6, 2) if trans_a else (2, 6))
        b = g.const(g.randn(5, 6) if trans_b else g.randn(6, 5))
        y = g.op("Gemm", [g.x, b, g.const(g.randn(5))], transA=trans_a, transB=trans_b, alpha=alpha, beta=beta)
        return Case(g.build(g.bn(y, 5)), {"Gemm": 1}, {"gemm-backward"})
    return build


def matmul_bn_rank2():
    g = Graph((3, 6))
    y = g.op("MatMul", [g.x, g.const(g.randn(6, 5))])
    return Case(g.build(g.bn(y, 5)), {"Gemm": 1}, {"matmul-backward"})


def matmul_bn_axis_trap():
    """MatMul -> BatchNormalization on (N, C, L) with C == L: BN normalizes C, MatMul's features are L."""
    g = Graph((2, 5, 6))
    y = g.op("MatMul", [g.x, g.const(g.randn(6, 5))])
    return Case(g.build(g.bn(y, 5)), {"MatMul": 1, "BatchNormalization": 1},
                skipped=("acts on axis 1 of size 5 of the [2, 5, 5] tensor, but the output features of",))


def conv_elementwise():
    g = Graph((2, 4, 6, 6))
    y = g.conv(g.x, 4, 8)
    y = g.op("Mul", [y, g.const(g.randn(8, 1, 1))])
    y = g.op("Add", [g.const(g.randn(1, 8, 1, 1)), y])
    y = g.op("Sub", [y, g.const(g.randn(8, 1, 1))])
    y = g.op("Div", [y, g.const(g.rng.uniform(0.5, 2, (8, 1, 1)))])
    y = g.op("Mul", [y, g.const(np.array([1.5]))])
    return Case(g.build(g.op("Relu", [y])), {"Conv": 1, "Relu": 1}, {"conv-backward"})


def width_equals_channels_trap():
    """Conv output (1, 16, 16, 16) times a constant of shape (16,): it scales W, not the channels."""
    g = Graph((1, 3, 16, 16))
    y = g.op("Mul", [g.conv(g.x, 3, 16), g.const(g.randn(16))])
    return Case(g.build(y), {"Conv": 1, "Mul": 1},
                skipped=("the norm acts on axis 3 (the last) of size 16 of the [1, 16, 16, 16] tensor, "
                         "but the output channels of",))


def chain():
    g = Graph((2, 3, 8, 8))
    y = g.bn(g.conv(g.x, 3, 8), 8)
    y = g.op("Add", [g.op("Mul", [y, g.const(g.randn(8, 1, 1))]), g.const(g.randn(8, 1, 1))])
    case = Case(g.build(g.op("Relu", [y])), {"Conv": 1, "Relu": 1}, {"conv-backward"})
    case.kwargs["chain"] = 3
    return case


def input_normalization(pads):
    def build():
        g = Graph((2, 3, 8, 8))
        y = g.op("Sub", [g.x, g.const(np.array([0.485, 0.456, 0.406]).reshape(1, 3, 1, 1))])
        y = g.op("Div", [y, g.const(np.array([0.229, 0.224, 0.225]).reshape(1, 3, 1, 1))])
        left = {"Conv": 1, "Sub": 1} if pads else {"Conv": 1}
        return Case(g.build(g.conv(y, 3, 8, pads=pads)), left, {"conv-forward"},
                    notes=("zero padding: input shift x - nu",) if pads else ())
    return build


def normalization_before_gemm():
    g = Graph((2, 6))
    y = g.op("Div", [g.op("Sub", [g.x, g.const(g.randn(6))]), g.const(g.rng.uniform(0.5, 2, 6))])
    y = g.op("Gemm", [y, g.const(g.randn(4, 6)), g.const(g.randn(4))], transB=1, alpha=0.5)
    return Case(g.build(y), {"Gemm": 1}, {"gemm-forward"})


def affine_before_matmul():
    """LayerNorm's scale and shift before a projection: folded into W, the shift merged into the bias Add."""
    g = Graph((2, 4, 6))
    y = g.op("Add", [g.op("Mul", [g.x, g.const(g.randn(6))]), g.const(g.randn(6))])
    y = g.op("Add", [g.op("MatMul", [y, g.const(g.randn(6, 5))]), g.const(g.randn(5))])
    return Case(g.build(y), {"MatMul": 1, "Add": 1}, {"matmul-forward"},
                skipped=("it is matmul6's bias already: a MatMul has no bias input and its rank-3 output",))


def _whitening(g, x, c, groups):
    """x - mu, reshape into groups, W_g @ x_g, reshape back, scale, shift: a whitening layer's export."""
    h, w = 4, 4
    y = g.op("Sub", [x, g.const(g.randn(1, c, 1, 1))])
    y = g.op("Reshape", [y, g.const(np.array([-1, groups, c // groups, h * w]), cast=False)])
    y = g.op("MatMul", [g.const(g.randn(1, groups, c // groups, c // groups, scale=0.5)), y])
    y = g.op("Reshape", [y, g.const(np.array([-1, c, h, w]), cast=False)])
    return g.op("Add", [g.op("Mul", [y, g.const(g.randn(1, c, 1, 1))]), g.const(g.randn(1, c, 1, 1))])


def whitening_after_conv():
    g = Graph(("batch", 3, 4, 4))
    y = _whitening(g, g.conv(g.x, 3, 8), 8, groups=2)
    return Case(g.build(g.op("Relu", [y])), {"Conv": 1, "Relu": 1}, {"conv-backward"})


def whitening_before_conv():
    g = Graph((2, 8, 4, 4))
    y = _whitening(g, g.x, 8, groups=4)
    return Case(g.build(g.conv(y, 8, 6, k=1, pads=0)), {"Conv": 1}, {"conv-forward"})


def whitening_before_padded_conv():
    g = Graph((2, 8, 4, 4))
    y = _whitening(g, g.x, 8, groups=1)
    return Case(g.build(g.conv(y, 8, 6)), {"Conv": 1, "Sub": 1}, {"conv-forward"},
                notes=("zero padding: input shift x - nu",))


def position_mixing_region():
    """A reshape + matmul over the spatial positions returns to the shape but is no channel map."""
    g = Graph((2, 3, 4, 4))
    y = g.op("Reshape", [g.conv(g.x, 3, 4), g.const(np.array([2, 4, 16]), cast=False)])
    y = g.op("MatMul", [y, g.const(g.randn(16, 16))])
    y = g.op("Reshape", [y, g.const(np.array([2, 4, 4, 4]), cast=False)])
    return Case(g.build(y), {"Conv": 1, "Reshape": 2, "MatMul": 1},
                skipped=("not the same channel map at every position",))


# the depthwise 3x3 conv below on (8, 4, 4) outputs, in millions of multiply-adds per sample: every
# output value sums 8/G input channels' 3x3 windows
MACS_8, MACS_2 = 8 * 4 * 4 * (8 // 8) * 9 / 1e6, 8 * 4 * 4 * (8 // 2) * 9 / 1e6


def whitening_after_depthwise(densify):
    def build():
        g = Graph((2, 8, 4, 4))
        y = _whitening(g, g.conv(g.x, 8, 8, groups=8), 8, groups=2)
        if densify:
            return Case(g.build(y), {"Conv": 1}, {"conv-backward"}, notes=("groups 8 -> 2 (densify)",),
                        kwargs={"densify": True})
        # x - mu folds alone; the region cannot, and the scale and shift after it have no layer
        return Case(g.build(y), {"Conv": 1, "Reshape": 2, "MatMul": 1, "Mul": 1, "Add": 1}, {"conv-backward"},
                    skipped=("mixes output channels across the 8 groups of conv3; the exact fold is a conv with 2 "
                             f"groups, 4x the MACs ({MACS_8:.3g}M -> {MACS_2:.3g}M per sample); pass densify=True",) * 3)
    return build


def whitening_after_grouped_conv_transpose():
    """The refusal names the MACs a transposed conv would cost: every input value (4 x 2 x 2 of
    them) spreads into 8/G output channels' 2x2 windows."""
    g = Graph((2, 4, 2, 2))
    y = g.op("ConvTranspose", [g.x, g.const(g.randn(4, 2, 2, 2, scale=0.5)), g.const(g.randn(8))], name="up",
             group=4, strides=[2, 2], kernel_shape=[2, 2])
    macs_4, macs_2 = 4 * 2 * 2 * (8 // 4) * 4 / 1e6, 4 * 2 * 2 * (8 // 2) * 4 / 1e6
    return Case(g.build(_whitening(g, y, 8, groups=2)), {"ConvTranspose": 1, "Reshape": 2, "MatMul": 1, "Mul": 1, "Add": 1},
                {"conv-transpose-backward"},
                skipped=("mixes output channels across the 4 groups of up; the exact fold is a conv with 2 groups, "
                         f"2x the MACs ({macs_4:.3g}M -> {macs_2:.3g}M per sample); pass densify=True",) * 3)


def split_chain_backward_then_forward():
    """Grouped conv -> BN -> whitening (mixing the groups) -> 1x1 conv: BN and x - mu fold back into the
    grouped conv, the rest of the chain forward into the next conv, which must then read the first
    conv's new output (the tensor between them was replaced by the backward fold)."""
    g = Graph((2, 4, 4, 4))
    y = _whitening(g, g.bn(g.conv(g.x, 4, 4, groups=2), 4), 4, groups=1)
    return Case(g.build(g.conv(y, 4, 3, k=1, pads=0)), {"Conv": 2}, {"conv-backward", "conv-forward"})


def identity_beside_shared_output():
    """Swish with beta = 1 as paddle2onnx writes it: y * sigmoid(1 * y). The Mul by 1 goes; the BN folds."""
    g = Graph((2, 3, 6, 6))
    y = g.bn(g.conv(g.x, 3, 4), 4)
    y = g.op("Mul", [y, g.op("Sigmoid", [g.op("Mul", [y, g.const(np.array([1.0]))])])])
    return Case(g.build(y), {"Conv": 1, "Sigmoid": 1, "Mul": 1}, {"conv-backward"}, kwargs={"tidied": 1})


def _scalar(g, value):
    return g.const(np.array([value]))


def gelu_between_convs():
    """GELU as paddle2onnx writes it, x * (1 + erf(x / sqrt 2)) * 0.5, between two convs: its Div and Add
    are the activation's own arithmetic (not listed), its final * 0.5 folds forward into the next conv."""
    g = Graph((2, 3, 8, 8))
    y = g.bn(g.conv(g.x, 3, 6), 6)
    inner = g.op("Add", [g.op("Erf", [g.op("Div", [y, _scalar(g, 1.4142135)])]), _scalar(g, 1.0)])
    y = g.op("Mul", [g.op("Mul", [y, inner]), _scalar(g, 0.5)])
    return Case(g.build(g.conv(y, 6, 4)), {"Conv": 2, "Div": 1, "Erf": 1, "Add": 1, "Mul": 1},
                {"conv-backward", "conv-forward"})


def hardswish_then_learned_affine():
    """Hardswish x * clip(x + 3, 0, 6) / 6, then a learned scalar scale and shift before a MaxPool: the
    + 3 and / 6 are the activation's (not listed); the learned affine is a site, skipped with its reason."""
    g = Graph((2, 3, 8, 8))
    y = g.bn(g.conv(g.x, 3, 4), 4)
    gate = g.op("Clip", [g.op("Add", [y, _scalar(g, 3.0)]), g.const(np.array(0.0)), g.const(np.array(6.0))])
    y = g.op("Div", [g.op("Mul", [y, gate]), _scalar(g, 6.0)])
    y = g.op("Add", [g.op("Mul", [y, _scalar(g, 1.7)], name="learned_scale"), _scalar(g, -0.2)], name="learned_shift")
    y = g.op("MaxPool", [y], kernel_shape=[2, 2], name="pool")
    return Case(g.build(y), {"Conv": 1, "Add": 2, "Clip": 1, "Mul": 2, "Div": 1, "MaxPool": 1}, {"conv-backward"},
                skipped=("its output feeds pool (MaxPool), not a Conv/Gemm/MatMul",) * 2)


def layernorm_before_matmul():
    """LayerNorm written out: var + eps is arithmetic on a statistic (not listed); gamma and beta fold
    forward into the projection, beta as an Add after it."""
    g = Graph((2, 4, 6))
    d = g.op("Sub", [g.x, g.op("ReduceMean", [g.x], axes=[-1])])
    var = g.op("ReduceMean", [g.op("Pow", [d, g.const(np.array(2.0))])], axes=[-1])
    y = g.op("Div", [d, g.op("Sqrt", [g.op("Add", [var, _scalar(g, 1e-5)], name="eps")])])
    y = g.op("Add", [g.op("Mul", [y, g.const(g.randn(6))]), g.const(g.randn(6))])
    y = g.op("MatMul", [y, g.const(g.randn(6, 5))])
    return Case(g.build(y), {"ReduceMean": 2, "Sub": 1, "Pow": 1, "Add": 2, "Sqrt": 1, "Div": 1, "MatMul": 1},
                {"matmul-forward"})


def scaled_sigmoid_without_gate():
    """sigmoid(2 x) alone is no gate: the scalar Mul is listed when it cannot fold (its conv output is read twice)."""
    g = Graph((2, 3, 6, 6))
    y = g.conv(g.x, 3, 4, name="conv")
    s = g.op("Sigmoid", [g.op("Mul", [y, _scalar(g, 2.0)])])
    return Case(g.build(g.op("Add", [s, y])), {"Conv": 1, "Mul": 1, "Sigmoid": 1, "Add": 1},
                skipped=("the output of conv also feeds",))


def grid_arithmetic_not_a_site():
    """An anchor grid computed from the input's shape (Shape -> Gather -> Cast -> Range, + 0.5): no data
    flows through its Add, which is no norm; the scaled head output beside it is one."""
    g = Graph((1, 3, 4, "w"))   # a symbolic width: the grid is computed at run time
    width = g.op("Gather", [g.op("Shape", [g.x]), g.const(np.array(3, np.int64), cast=False)], axis=0)
    width = g.op("Cast", [width], to=onnx.TensorProto.FLOAT)
    grid = g.op("Add", [g.op("Range", [g.const(np.array(0.0, np.float32), cast=False), width,
                                       g.const(np.array(1.0, np.float32), cast=False)]), _scalar(g, 0.5)], name="grid")
    y = g.op("Mul", [g.op("Relu", [g.x]), _scalar(g, 2.0)], name="head_scale")
    return Case(g.build(g.op("Add", [y, grid])), {"Shape": 1, "Gather": 1, "Cast": 1, "Range": 1, "Add": 2, "Relu": 1, "Mul": 1},
                skipped=("its input comes from relu", ))


CASES = {
    "conv-bn": conv_bn,
    "conv-nobias-stride-bn": conv_no_bias_bn,
    "convtranspose-bn": conv_transpose_bn(1),
    "convtranspose-grouped-bn": conv_transpose_bn(2),
    "convtranspose-depthwise-bn": conv_transpose_bn(4),
    "gemm-bn": gemm_bn(0, 0, 1.0, 1.0),
    "gemm-transB-alpha-beta-bn": gemm_bn(0, 1, 0.5, 2.0),
    "gemm-transA-bn": gemm_bn(1, 0, 1.0, 1.0),
    "matmul-bn-rank2": matmul_bn_rank2,
    "matmul-bn-C-equals-L-refused": matmul_bn_axis_trap,
    "conv-mul-add-sub-div-scalar": conv_elementwise,
    "W-equals-C-trap-refused": width_equals_channels_trap,
    "chain-bn-mul-add": chain,
    "input-normalization-padded-conv": input_normalization(1),
    "input-normalization-unpadded-conv": input_normalization(0),
    "normalization-before-gemm": normalization_before_gemm,
    "affine-before-matmul-bias": affine_before_matmul,
    "whitening-after-conv": whitening_after_conv,
    "whitening-before-1x1-conv": whitening_before_conv,
    "whitening-before-padded-conv": whitening_before_padded_conv,
    "position-mixing-region-refused": position_mixing_region,
    "whitening-after-depthwise-refused": whitening_after_depthwise(False),
    "whitening-after-depthwise-densify": whitening_after_depthwise(True),
    "whitening-after-grouped-convtranspose-refused": whitening_after_grouped_conv_transpose,
    "identity-mul-beside-shared-output": identity_beside_shared_output,
    "chain-split-backward-then-forward": split_chain_backward_then_forward,
    "gelu-arithmetic-not-a-site": gelu_between_convs,
    "hardswish-arithmetic-not-a-site-learned-affine-is": hardswish_then_learned_affine,
    "layernorm-eps-not-a-site": layernorm_before_matmul,
    "scalar-before-sigmoid-without-gate-is-a-site": scaled_sigmoid_without_gate,
    "anchor-grid-arithmetic-not-a-site": grid_arithmetic_not_a_site,
}


@pytest.mark.parametrize("name", CASES)
def test_site(name):
    check_case(CASES[name]())


def check_case(case: Case) -> None:
    """The fold of ``case.model``: the input untouched, the ops left, the rules, notes and skip
    reasons, every norm reported once, and the folded graph equivalent to the original."""
    before = case.model.SerializeToString()
    folded, report = normfold.fold_onnx(case.model, densify=case.kwargs.get("densify", False))
    assert case.model.SerializeToString() == before, "the input proto was modified"
    onnx.checker.check_model(folded, full_check=True)
    assert report.front_end == "onnx"

    ops = collections.Counter(n.op_type for n in folded.graph.node)
    assert dict(ops) == case.left, report.lines()
    assert {f.rule for f in report.folded} == case.rules, report.lines()
    assert len(report.tidied) == case.kwargs.get("tidied", 0) and {f.rule for f in report.tidied} <= {"identity"}
    for note in case.notes:
        assert any(note in f.note for f in report.folded), (note, report.lines())
    assert len(report.skipped) == len(case.skipped), report.lines()
    for skipped, reason in zip(report.skipped, case.skipped):
        assert reason in skipped.reason, (reason, skipped)
    if "chain" in case.kwargs:
        assert {len(f.chain) for f in report.folded} == {case.kwargs["chain"]}

    # every norm-like node of the original is in the report exactly once
    named = [n for f in report.folded + report.tidied for n in f.norm.split(",")] + [
        n for s in report.skipped for n in s.norm.split(",")]
    assert len(named) == len(set(named))
    assert_equivalent(case.model, folded, feeds_for(case.model))


def test_names_of_untouched_nodes_and_tensors_stay():
    """Verification matches tensors by name: untouched nodes keep theirs, a layer that absorbed a norm
    writes the norm's output name, and no name denotes other values than in the original."""
    g = Graph((2, 3, 8, 8))
    y = g.op("Relu", [g.bn(g.conv(g.x, 3, 8, name="conv"), 8, name="bn")], name="relu")
    y = g.op("Add", [g.op("Mul", [y, g.const(g.randn(8, 1, 1))], name="scale"), g.const(g.randn(8, 1, 1))], name="shift")
    model = g.build(g.conv(y, 8, 4, k=1, pads=0, name="head"))
    for node in model.graph.node:
        if node.name == "relu":
            node.name = ""   # an unnamed node must stay unnamed
    folded, report = normfold.fold_onnx(model)
    nodes = {n.output[0]: n for n in folded.graph.node}
    assert nodes["bn_out"].op_type == "Conv" and nodes["bn_out"].name == "conv"   # wrote the norm's output
    assert nodes["relu_out"].name == "" and nodes["head_out"].name == "head"
    assert "conv_out" not in nodes and "shift_out" not in nodes                  # pre-norm values are gone
    assert [(f.norm, f.into, f.direction) for f in report.folded] == [
        ("bn", "conv", "backward"), ("scale", "head", "forward"), ("shift", "head", "forward")]
    feeds = feeds_for(model)
    from ._oracle import run64

    names = ["bn_out", "relu_out", "head_out"]
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    inferred = {vi.name: vi for vi in onnx.shape_inference.infer_shapes(model).graph.value_info}
    probe.graph.output.extend(inferred[n] for n in names[:2])
    folded_probe = onnx.ModelProto()
    folded_probe.CopyFrom(folded)
    folded_probe.graph.output.extend(inferred[n] for n in names[:2])
    for a, b in zip(run64(probe, feeds), run64(folded_probe, feeds)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)   # float32 weights, same values
