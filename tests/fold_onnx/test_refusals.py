"""Each refusal of the ONNX pass, named: the site is reported with its reason, the graph keeps it,
its initializers byte for byte, and still computes the original's values; bad files are one-line
FoldErrors."""
from __future__ import annotations

import collections
import os

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import normfold
from normfold.fold.errors import FoldError

from ._graphs import Graph
from ._oracle import assert_equivalent, feeds_for


def weight_is_graph_input():
    g = Graph((2, 3, 6, 6))
    g.extra_inputs.append(helper.make_tensor_value_info("w", TensorProto.FLOAT, [4, 3, 3, 3]))
    y = g.op("Conv", [g.x, "w"], pads=[1] * 4, kernel_shape=[3, 3])
    return g.build(g.bn(y, 4)), "the weight 'w' of conv1 is a graph input"


def weight_is_graph_input_with_initializer():
    """An initializer that is also a graph input (IR < 4 style): overridable at run time."""
    g = Graph((2, 3, 6, 6))
    w = g.const(g.randn(4, 3, 3, 3), name="w")
    g.extra_inputs.append(helper.make_tensor_value_info(w, TensorProto.FLOAT, [4, 3, 3, 3]))
    y = g.op("Conv", [g.x, w], pads=[1] * 4, kernel_shape=[3, 3])
    return g.build(g.bn(y, 4)), "the weight 'w' of conv1 is a graph input"


def output_with_other_consumers():
    g = Graph((2, 3, 6, 6))
    y = g.conv(g.x, 3, 4, name="conv")
    return g.build(g.op("Add", [g.bn(y, 4), g.op("Relu", [y])])), "the output of conv also feeds"


def norm_output_with_other_consumers():
    """A norm before a conv whose output also feeds a Relu: no forward fold (and no layer behind it)."""
    g = Graph((2, 4, 6, 6))
    y = g.bn(g.x, 4)
    return g.build(g.conv(y, 4, 4, k=1, pads=0), g.op("Relu", [y])), "its output feeds 2 nodes"


def batchnorm_training_mode():
    g = Graph((2, 3, 6, 6), opset=15)
    y = g.bn(g.conv(g.x, 3, 4), 4, outputs=3, training_mode=1)
    return g.build(y), "training_mode=1"


def batchnorm_in_a_region_with_a_scale_from_the_graph():
    """Reshape -> BatchNormalization -> Reshape is one region: its BN gets a BN site's checks."""
    g = Graph((2, 4, 4, 4))
    g.extra_inputs.append(helper.make_tensor_value_info("s", TensorProto.FLOAT, [4]))
    y = g.op("Reshape", [g.conv(g.x, 4, 4), g.const(np.array([2, 4, 16]), cast=False)])
    params = [g.const(g.randn(4, scale=0.2)), g.const(g.randn(4, scale=0.3)), g.const(g.rng.uniform(0.5, 2.0, 4))]
    y = g.op("BatchNormalization", [y, "s", *params], name="bn_in_region", epsilon=1e-5)
    y = g.op("Reshape", [y, g.const(np.array([2, 4, 4, 4]), cast=False)])
    return g.build(y), "its bn_in_region: its scale (s) is a graph input, not a stored constant"


def custom_op_between():
    g = Graph((2, 3, 6, 6))
    y = g.op("Scale", [g.conv(g.x, 3, 4)], domain="com.example", name="custom")
    return g.build(g.bn(y, 4)), "its input comes from custom (Scale), not a Conv"


def old_opset_elementwise():
    """Add-6 broadcasts with a legacy attribute this pass does not interpret."""
    g = Graph((2, 3, 6, 6), opset=6)
    y = g.op("Add", [g.conv(g.x, 3, 4), g.const(g.randn(4, 1, 1))])
    return g.build(y), "is Add-6 (opset 6), a version of the op this pass does not know"


def fp16_overflow():
    g = Graph((1, 3, 6, 6), dtype=np.float16)
    w = g.const(np.full((4, 3, 3, 3), 900.0))
    y = g.op("Conv", [g.x, w], pads=[1] * 4, kernel_shape=[3, 3])
    params = [np.full(4, 200.0), np.zeros(4), np.zeros(4), np.full(4, 1.0)]
    y = g.op("BatchNormalization", [y] + [g.const(p) for p in params], epsilon=1e-3)
    return g.build(y), "the folded weight of conv2 reaches 1.799e+05, beyond the float16 maximum 65504"


def zero_division():
    g = Graph((2, 3, 6, 6))
    y = g.op("Div", [g.conv(g.x, 3, 4), g.const(np.array([1.0, 0.0, 2.0, 1.0]).reshape(4, 1, 1))])
    return g.build(y), "it divides by 0 (element 1 of its constant)"


def per_sample_bias():
    g = Graph((2, 6))
    y = g.op("Gemm", [g.x, g.const(g.randn(6, 5)), g.const(g.randn(2, 5))])
    return g.build(g.bn(y, 5)), "the C of gemm3 has shape [2, 5]: not one bias vector for every row"


REFUSALS = {
    "weight-is-graph-input": weight_is_graph_input,
    "initializer-listed-as-input": weight_is_graph_input_with_initializer,
    "producer-output-has-other-consumers": output_with_other_consumers,
    "norm-output-has-other-consumers": norm_output_with_other_consumers,
    "batchnorm-training-mode": batchnorm_training_mode,
    "batchnorm-in-region-scale-from-graph": batchnorm_in_a_region_with_a_scale_from_the_graph,
    "custom-domain-op-between": custom_op_between,
    "opset-6-elementwise": old_opset_elementwise,
    "fp16-folded-weight-overflows": fp16_overflow,
    "division-by-zero": zero_division,
    "gemm-per-sample-bias": per_sample_bias,
}
NOT_RUNNABLE = {"batchnorm-training-mode", "custom-domain-op-between", "opset-6-elementwise",
                "fp16-folded-weight-overflows", "division-by-zero"}


def _initializers(model: onnx.ModelProto) -> dict[str, tuple]:
    """name -> (element type, shape, the values' bytes)."""
    return {t.name: (t.data_type, tuple(t.dims), numpy_helper.to_array(t).tobytes()) for t in model.graph.initializer}


@pytest.mark.parametrize("name", REFUSALS)
def test_refusal(name):
    model, reason = REFUSALS[name]()
    before = model.SerializeToString()
    folded, report = normfold.fold_onnx(model)
    assert model.SerializeToString() == before
    onnx.checker.check_model(folded, full_check=True)
    assert any(reason in s.reason for s in report.skipped), report.lines()
    ops = collections.Counter(n.op_type for n in folded.graph.node)
    original = collections.Counter(n.op_type for n in model.graph.node)
    for op in ("BatchNormalization", "Add", "Div", "Mul"):
        assert ops[op] == original[op], (op, report.lines())   # the refused norm stays
    assert _initializers(folded) == _initializers(model), report.lines()   # and no weight was rewritten
    if name not in NOT_RUNNABLE:
        assert_equivalent(model, folded, feeds_for(model))


def test_fp16_model_folds_in_float64_and_casts_once():
    g = Graph((1, 3, 8, 8), dtype=np.float16)
    model = g.build(g.op("Relu", [g.bn(g.conv(g.x, 3, 8), 8)]))
    folded, report = normfold.fold_onnx(model)
    assert [f.rule for f in report.folded] == ["conv-backward"]
    weights = {t.name: t for t in folded.graph.initializer}
    conv = next(n for n in folded.graph.node if n.op_type == "Conv")
    assert weights[conv.input[1]].data_type == TensorProto.FLOAT16
    assert_equivalent(model, folded, feeds_for(model))


def _whitening_with_symbolic_dims():
    g = Graph(("n", 8, "h", "w"))
    y = g.op("Reshape", [g.conv(g.x, 8, 8), g.const(np.array([-1, 2, 4, 16]), cast=False)])
    y = g.op("MatMul", [g.const(g.randn(1, 2, 4, 4)), y])
    y = g.op("Reshape", [y, g.const(np.array([-1, 8, 4, 4]), cast=False)])
    return g.build(y)


def test_symbolic_dims_a_region_needs_are_a_fold_error_naming_the_input():
    model = _whitening_with_symbolic_dims()
    with pytest.raises(FoldError, match=r"input 'x' has symbolic dims h, w; the fold needs static shapes .*input_shapes"):
        normfold.fold_onnx(model)
    folded, report = normfold.fold_onnx(model, input_shapes={"x": [1, 8, 4, 4]})
    assert [f.rule for f in report.folded] == ["conv-backward"] and report.warnings
    dims = [d.dim_param or d.dim_value for d in folded.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["n", 8, "h", "w"]   # the declared input is kept
    assert_equivalent(model, folded, feeds_for(model, {"x": [3, 8, 4, 4]}))


@pytest.mark.parametrize("shapes, message", [
    ({"y": [1, 8, 4, 4]}, "input_shapes names 'y', but the graph inputs are 'x'"),
    ({"x": [1, 3, 4, 4]}, r"input_shapes\['x'\] = \[1, 3, 4, 4\] does not fit the declared shape"),
    ({"x": [1, 8, 0, 4]}, "must be positive integers"),
])
def test_bad_input_shapes(shapes, message):
    with pytest.raises(FoldError, match=message):
        normfold.fold_onnx(_whitening_with_symbolic_dims(), input_shapes=shapes)


def _write(path, data: bytes):
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("case", ["text", "empty", "missing", "directory"])   # external data: test_external_data.py
def test_bad_files_are_one_line_fold_errors(tmp_path, case):
    if case == "text":
        src = _write(tmp_path / "m.onnx", b"this is not a model\n" * 50)
    elif case == "empty":
        src = _write(tmp_path / "m.onnx", b"")
    elif case == "missing":
        src = tmp_path / "nothing.onnx"
    else:
        src = tmp_path
    before = src.read_bytes() if src.is_file() else None
    with pytest.raises(FoldError) as err:
        normfold.fold_onnx(src)
    message = str(err.value)
    assert "\n" not in message and str(src) in message
    expected = {"text": "not", "empty": "not an ONNX model", "missing": "does not exist",
                "directory": "is not a file"}[case]
    assert expected in message
    if before is not None:
        assert src.read_bytes() == before


def test_a_file_is_read_not_written(tmp_path):
    g = Graph((1, 3, 8, 8))
    src = tmp_path / "m.onnx"
    onnx.save(g.build(g.bn(g.conv(g.x, 3, 8, name="conv"), 8)), src)
    before, mtime = src.read_bytes(), os.stat(src).st_mtime_ns
    folded, report = normfold.fold_onnx(src)
    assert src.read_bytes() == before and os.stat(src).st_mtime_ns == mtime
    assert [f.into for f in report.folded] == ["conv"]


def _reshaped_constant_model(inputs_of_reshape, overridable=False):
    """x (2, 3) + Reshape(k): the Reshape reads only stored tensors (lifted to one constant when it can be)."""
    k = helper.make_tensor("k", TensorProto.FLOAT, [6], np.arange(6, dtype=np.float32) / 7)
    sh = helper.make_tensor("sh", TensorProto.INT64, [2], [2, 3])
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])]
    if overridable:
        inputs.append(helper.make_tensor_value_info("k", TensorProto.FLOAT, [6]))
    graph = helper.make_graph(
        [helper.make_node("Reshape", inputs_of_reshape, ["kk"]), helper.make_node("Mul", ["x", "kk"], ["y"])],
        "g", inputs, [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])], [k, sh])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def test_a_malformed_node_on_constants_is_a_fold_error_not_a_crash():
    """The lifting of constants runs before the checker: a Reshape without its shape input must not raise
    IndexError there, but reach the checker's one-line refusal."""
    with pytest.raises(FoldError, match="is not a valid ONNX model: .*Reshape"):
        normfold.fold_onnx(_reshaped_constant_model(["k"]))


def test_an_initializer_that_is_a_graph_input_stays_overridable():
    import onnxruntime as ort

    model = _reshaped_constant_model(["k", "sh"], overridable=True)
    folded, _ = normfold.fold_onnx(model)
    x = np.ones((2, 3), np.float32)
    k = np.full(6, 5.0, np.float32)
    runs = [ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x, "k": k})[0]
            for m in (model, folded)]
    assert np.array_equal(runs[0], np.full((2, 3), 5.0, np.float32))   # the caller's k is used
    assert np.array_equal(runs[1], runs[0])


def _branch(name: str, rng, extra: list) -> onnx.GraphProto:
    """A body that convolves the outer ``x``, then normalizes: a Conv -> BatchNormalization, and whatever
    ``extra`` adds after it (nodes reading ``{name}_bn`` and writing ``{name}_y``)."""
    f = lambda *shape: onnx.numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32))  # noqa: E731
    params = [f(4, 3, 3, 3), *(onnx.numpy_helper.from_array(rng.uniform(0.5, 2, 4).astype(np.float32)) for _ in range(4))]
    for tensor, suffix in zip(params, ("w", "s", "b", "m", "v")):
        tensor.name = f"{name}_{suffix}"
    nodes = [helper.make_node("Conv", ["x", f"{name}_w"], [f"{name}_c"], name=f"{name}_conv", pads=[1] * 4),
             helper.make_node("BatchNormalization", [f"{name}_c", *(f"{name}_{k}" for k in "sbmv")], [f"{name}_bn"],
                              name=f"{name}_norm"), *extra]
    return helper.make_graph(nodes, name, [], [helper.make_tensor_value_info(f"{name}_y", TensorProto.FLOAT, [1, 4, 8, 8])],
                             params)


def test_norms_inside_if_bodies_are_reported_not_folded():
    """The pass does not enter If/Loop/Scan bodies; each norm there is reported, with where it is, and
    the bodies compute what they did. A body's integer arithmetic is no norm."""
    import onnxruntime as ort

    rng = np.random.default_rng(0)
    scale = helper.make_tensor("k", TensorProto.FLOAT, [4, 1, 1], rng.uniform(0.5, 2, 4).astype(np.float32).tolist())
    inner = _branch("inner", rng, [
        helper.make_node("Constant", [], ["inner_k"], value=scale),
        helper.make_node("Mul", ["inner_bn", "inner_k"], ["inner_y"], name="inner_scale")])
    deep = helper.make_node("If", ["cond"], ["else_y"], name="nested", then_branch=inner,
                            else_branch=_branch("other", rng, [helper.make_node("Relu", ["other_bn"], ["other_y"])]))
    one = helper.make_tensor("one", TensorProto.INT64, [], [1])
    then = _branch("then", rng, [helper.make_node("Constant", [], ["then_one"], value=one),
                                 helper.make_node("Add", ["n", "then_one"], ["then_n"], name="count"),
                                 helper.make_node("Identity", ["then_bn"], ["then_y"])])
    orelse = helper.make_graph([deep], "else", [], [helper.make_tensor_value_info("else_y", TensorProto.FLOAT, [1, 4, 8, 8])])
    graph = helper.make_graph(
        [helper.make_node("If", ["cond"], ["y"], name="branch", then_branch=then, else_branch=orelse)], "g",
        [helper.make_tensor_value_info("cond", TensorProto.BOOL, []),
         helper.make_tensor_value_info("n", TensorProto.INT64, []),
         helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model, full_check=True)

    folded, report = normfold.fold_onnx(model)

    assert report.folded == []
    where = {s.norm: s.reason for s in report.skipped}
    assert where == {
        "then_norm": "it is inside the then_branch of branch (If): the pass folds the main graph only",
        "inner_norm": "it is inside the else_branch of branch (If), in the then_branch of nested (If): "
                      "the pass folds the main graph only",
        "inner_scale": "it is inside the else_branch of branch (If), in the then_branch of nested (If): "
                       "the pass folds the main graph only",
        "other_norm": "it is inside the else_branch of branch (If), in the else_branch of nested (If): "
                      "the pass folds the main graph only",
    }
    x = rng.standard_normal((1, 3, 8, 8)).astype(np.float32)
    for cond in (True, False):
        feeds = {"cond": np.array(cond), "n": np.array(3, np.int64), "x": x}
        runs = [ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)[0]
                for m in (model, folded)]
        assert np.array_equal(runs[0], runs[1])
