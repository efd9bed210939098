"""verify() with an ONNX graph as the float64 oracle: the original .onnx file, evaluated by onnx.reference."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from normfold import export
from normfold.verify import InputError, OnnxOracle, SessionError, TorchOracle, verify
from normfold.verify.float64_graph import Float64Graph

from ..conftest import run_onnx
from ..onnx_cli._files import to_float16
from . import _models


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """(model, x, unfolded export, the same graph with every Conv->BatchNormalization folded by hand)."""
    model = _models.tiny_bn()
    x = torch.randn(_models.SHAPE, generator=torch.Generator().manual_seed(1))
    d = tmp_path_factory.mktemp("onnx-oracle")
    original = export(model, x, d / "original.onnx", fold=False).path
    folded = d / "folded.onnx"
    onnx.save(fold_by_hand(onnx.load(str(original))), str(folded))
    return model, x, original, folded


def fold_by_hand(proto: onnx.ModelProto, scale_weight_of: int | None = None, factor: float = 1.0) -> onnx.ModelProto:
    """Fold each BatchNormalization into the Conv before it, in float64 numpy (independent of normfold).

    W' = W · s[o],  b' = (b − μ) · s + β,  s = γ / √(σ² + ε). The Conv takes over the norm's output
    name, as normfold's ONNX pass does. ``scale_weight_of=k``: the k-th folded weight is then
    multiplied by ``factor`` (a wrong fold to be caught).
    """
    proto = onnx.ModelProto.FromString(proto.SerializeToString())
    g = proto.graph
    inits = {i.name: numpy_helper.to_array(i).astype(np.float64) for i in g.initializer}
    producer = {o: n for n in g.node for o in n.output}
    new_inits, dead, k = [], [], 0
    for bn in [n for n in g.node if n.op_type == "BatchNormalization"]:
        conv = producer[bn.input[0]]
        eps = next((a.f for a in bn.attribute if a.name == "epsilon"), 1e-5)
        gamma, beta, mean, var = (inits[n] for n in bn.input[1:5])
        s = gamma / np.sqrt(var + eps)
        w = inits[conv.input[1]] * s[:, None, None, None]
        b = (inits[conv.input[2]] if len(conv.input) > 2 else 0.0) - mean
        b = b * s + beta
        if k == scale_weight_of:
            w = w * factor
        k += 1
        names = (f"{conv.name}.w_folded", f"{conv.name}.b_folded")
        new_inits += [numpy_helper.from_array(w.astype(np.float32), names[0]),
                      numpy_helper.from_array(b.astype(np.float32), names[1])]
        del conv.input[1:]
        conv.input.extend(names)
        conv.output[0] = bn.output[0]
        dead.append(bn)
    for bn in dead:
        g.node.remove(bn)
    g.initializer.extend(new_inits)
    return proto


def test_float64_graph_is_the_model_in_float64(files):
    model, x, original, _ = files
    xb = torch.randn(3, *x.shape[1:], generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    [got] = Float64Graph(onnx.load(str(original))).run([xb.numpy()])
    with torch.no_grad():
        expected = model.double()(xb).numpy()
    model.float()
    assert got.dtype == np.float64
    assert np.abs(got - expected).max() <= 1e-12 * np.abs(expected).max()


def test_every_float_tensor_of_the_graph_is_widened():
    """Cast(to=FLOAT), Constant(value_float), ConstantOfShape, a float32 initializer and a subgraph's
    Constant all compute in float64: the result equals float64 numpy and not the float32 one."""
    third = helper.make_tensor("third", TensorProto.FLOAT, [1], [1 / 3])
    branch = helper.make_graph([helper.make_node("Constant", [], ["k"], value=third)], "then", [],
                               [helper.make_tensor_value_info("k", TensorProto.FLOAT, [1])])
    nodes = [
        helper.make_node("Cast", ["x"], ["x32"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["x32", "c"], ["a"]),
        helper.make_node("Constant", [], ["tenth"], value_float=0.1),
        helper.make_node("Add", ["a", "tenth"], ["b"]),
        helper.make_node("Shape", ["x"], ["shape"]),
        helper.make_node("ConstantOfShape", ["shape"], ["sevenths"],
                         value=helper.make_tensor("v", TensorProto.FLOAT, [1], [1 / 7])),
        helper.make_node("Add", ["b", "sevenths"], ["d"]),
        helper.make_node("Constant", [], ["yes"], value=helper.make_tensor("t", TensorProto.BOOL, [], [True])),
        helper.make_node("If", ["yes"], ["k"], then_branch=branch, else_branch=branch),
        helper.make_node("Mul", ["d", "k"], ["y"]),
    ]
    c = np.float32(np.pi)
    graph = helper.make_graph(nodes, "widen", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])],
                              [numpy_helper.from_array(np.array([c]), "c")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=9)
    x = np.array([1.1, -2.3, 1e-3, 7.7], dtype=np.float64)
    [y] = Float64Graph(model).run([x])
    f = np.float64
    expected = (x * f(c) + f(np.float32(0.1)) + f(np.float32(1 / 7))) * f(np.float32(1 / 3))
    in_float32 = ((x.astype(np.float32) * c + np.float32(0.1) + np.float32(1 / 7)) * np.float32(1 / 3)).astype(f)
    assert np.abs(y - expected).max() <= 1e-15
    assert np.abs(in_float32 - expected).max() > 1e-9   # so the check above can tell the two apart


def test_hand_folded_file_passes_against_the_original_graph(files):
    model, x, original, folded = files
    report = verify(original, folded, x)
    assert report.ok, str(report)
    assert {c.run for c in report.checks} == {"original_fp32", "onnx_cpu"}
    assert {c.batch for c in report.checks} == {1, 3}
    assert "oracle = original ONNX graph in float64" in report.rule
    # The error the report measured, computed independently: ORT on the folded file vs torch in float64.
    row = next(c for c in report.checks if c.run == "onnx_cpu" and c.batch == 1)
    with torch.no_grad():
        truth = model.double()(x.double()).numpy()
    model.float()
    assert row.stats.max_abs == pytest.approx(float(np.abs(run_onnx(folded, x) - truth).max()), rel=1e-6, abs=1e-12)
    ref = next(c for c in report.checks if c.run == "original_fp32" and c.batch == 1)
    assert ref.stats.max_abs == pytest.approx(float(np.abs(run_onnx(original, x) - truth).max()), rel=1e-6, abs=1e-12)


@pytest.mark.parametrize("which, tensor", [("first conv", 0), ("second conv", 1)], ids=["stem", "conv2"])
def test_wrong_fold_fails_and_names_the_node(files, tmp_path, which, tensor):
    _, x, original, _ = files
    bad_proto = fold_by_hand(onnx.load(str(original)), scale_weight_of=tensor, factor=1.001)
    bad = tmp_path / "bad.onnx"
    onnx.save(bad_proto, str(bad))
    report = verify(original, bad, x)
    assert not report.ok and {c.run for c in report.failures()} == {"onnx_cpu"}
    [where] = report.localization
    convs = [n for n in bad_proto.graph.node if n.op_type == "Conv"]
    assert (where.node, where.op_type, where.tensor) == (convs[tensor].name, "Conv", convs[tensor].output[0])
    assert f"ONNX node {convs[tensor].name} (Conv), tensor {convs[tensor].output[0]}" in "\n".join(report.lines())


def test_an_oracle_is_built_from_a_module_or_a_file(files):
    model, x, original, _ = files
    batch = (x.numpy(),)
    from_file, from_module = OnnxOracle(original), TorchOracle(model)
    a, b = from_file.run(batch), from_module.run(batch)
    assert np.abs(a[0] - b[0]).max() <= 1e-12 * np.abs(b[0]).max()
    # reference: the original in float32 (onnxruntime for the file, eager for the module): close, not equal to truth
    for oracle in (from_file, from_module):
        [r] = oracle.reference(batch, np.float32)
        assert 0 < np.abs(r - b[0]).max() <= 1e-5 * np.abs(b[0]).max()


def _unknown_op_model() -> onnx.ModelProto:
    """An op of domain com.microsoft that neither onnx.reference nor onnxruntime knows (a file with one only
    onnx.reference lacks is verified in float32 on onnxruntime: test_float32_oracle.py)."""
    graph = helper.make_graph([helper.make_node("NoSuchGelu", ["x"], ["y"], domain="com.microsoft")], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 3])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid("com.microsoft", 1)],
                             ir_version=9)


def _two_input_model() -> onnx.ModelProto:
    graph = helper.make_graph([helper.make_node("Add", ["x", "z"], ["y"])], "two",
                              [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["n", 3, 16, 16]) for n in "xz"],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 3, 16, 16])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=9)


@pytest.mark.parametrize("case, error, message", [
    ("op no oracle knows", SessionError, "onnxruntime cannot load"),
    ("checked file takes other inputs", InputError, "takes 1 inputs"),
    ("original is float16", InputError, "is a float16 model, the checked file float32"),
], ids=["unknown-op", "input-count", "dtype"])
def test_bad_input_names_the_problem(files, tmp_path, case, error, message):
    _, x, original, folded = files
    if case == "op no oracle knows":
        original = tmp_path / "gelu.onnx"
        onnx.save(_unknown_op_model(), str(original))
        folded, x = original, torch.randn(2, 3)
    elif case == "checked file takes other inputs":
        folded = tmp_path / "two.onnx"
        onnx.save(_two_input_model(), str(folded))
        x = (x, x)
    else:
        proto = to_float16(onnx.load(str(original)))
        original = tmp_path / "fp16.onnx"
        onnx.save(proto, str(original))
    with pytest.raises(error) as info:
        verify(original, folded, x)
    assert message in str(info.value) and len(str(info.value).splitlines()) == 1
