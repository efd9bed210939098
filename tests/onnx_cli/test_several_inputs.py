"""A file with several inputs on the command line: a detector-like graph with float, integer and bool inputs.

The graph (written with onnx.helper): ``image`` -> Conv -> BatchNormalization ->
Relu, scaled by the mean of ``scale_factor``; ``im_shape`` (int64) cast and
multiplied by ``scale_factor``, kept where ``valid`` (bool); one channel picked
by ``channel`` (int64, a fixed [1]: fed as it is at every batch size, like a
weight fed as an input). Every check compares the folded file with an
onnxruntime run of the original file on the same inputs.
"""
from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from normfold.cli import main

from ._files import C_IN, C_OUT, conv_bn_relu


def detector(path):
    inits = {
        **conv_bn_relu()[1],    # conv weights and batch-norm statistics
        "hw_axes": np.array([2, 3], np.int64),
        "zero": np.zeros(1, np.float32),
    }
    nodes = [
        helper.make_node("Conv", ["image", "w", "b"], ["conv_out"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["conv_out", "gamma", "beta", "mean", "var"], ["bn_out"], name="bn"),
        helper.make_node("Relu", ["bn_out"], ["feat"], name="relu"),
        helper.make_node("ReduceMean", ["scale_factor"], ["sf_mean"], name="sf_mean", axes=[1], keepdims=1),
        helper.make_node("Unsqueeze", ["sf_mean", "hw_axes"], ["sf4"], name="sf4"),
        helper.make_node("Mul", ["feat", "sf4"], ["y"], name="scale"),
        helper.make_node("Cast", ["im_shape"], ["im_float"], name="cast", to=TensorProto.FLOAT),
        helper.make_node("Mul", ["im_float", "scale_factor"], ["boxes_raw"], name="boxes_raw"),
        helper.make_node("Where", ["valid", "boxes_raw", "zero"], ["boxes"], name="keep"),
        helper.make_node("Gather", ["feat", "channel"], ["picked"], name="pick", axis=1),
    ]
    graph = helper.make_graph(
        nodes, "detector",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["n", C_IN, "h", "w"]),
         helper.make_tensor_value_info("im_shape", TensorProto.INT64, ["n", 2]),
         helper.make_tensor_value_info("scale_factor", TensorProto.FLOAT, ["n", 2]),
         helper.make_tensor_value_info("valid", TensorProto.BOOL, ["n", 2]),
         helper.make_tensor_value_info("channel", TensorProto.INT64, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", C_OUT, "h", "w"]),
         helper.make_tensor_value_info("boxes", TensorProto.FLOAT, ["n", 2]),
         helper.make_tensor_value_info("picked", TensorProto.FLOAT, ["n", 1, "h", "w"])],
        [numpy_helper.from_array(v, k) for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))
    return path


def feeds(batch=2, hw=8, seed=1):
    """Inputs drawn here with numpy, independently of normfold's generator."""
    rng = np.random.default_rng(seed)
    return {
        "image": rng.standard_normal((batch, C_IN, hw, hw)).astype(np.float32),
        "im_shape": rng.integers(100, 1000, (batch, 2)).astype(np.int64),
        "scale_factor": rng.uniform(0.5, 2.0, (batch, 2)).astype(np.float32),
        "valid": rng.integers(0, 2, (batch, 2)).astype(bool),
        "channel": np.array([rng.integers(0, C_OUT)], np.int64),
    }


def ort_outputs(path, feed):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feed)


def op_types(path) -> list[str]:
    return [n.op_type for n in onnx.load(str(path)).graph.node]


SHAPES = {"image": [1, C_IN, 16, 16], "im_shape": [1, 2], "scale_factor": [1, 2], "valid": [1, 2], "channel": [1]}


@pytest.fixture(scope="module")
def folded(tmp_path_factory):
    """``normfold run`` on the file: (the original, the folded file, run's exit code, run's JSON report)."""
    d = tmp_path_factory.mktemp("several")
    src = detector(d / "det.onnx")
    code = main(["run", str(src), "--input-shape", "image=1,3,16,16", "--out", str(d / "out"),
                 "--json", str(d / "run.json")])
    return src, d / "out" / "model.onnx", code, json.loads((d / "run.json").read_text())


@pytest.mark.parametrize("batch, hw", [(1, 16), (3, 16), (2, 12)])
def test_run_folds_the_norm_and_the_file_computes_what_the_original_does(folded, batch, hw):
    """The folded file on onnxruntime equals the original file on onnxruntime on inputs drawn here, also at a
    batch and size other than those given (the folded graph keeps the declared symbolic dims)."""
    src, out, code, report = folded
    assert code == 0 and report["verify"]["ok"]
    assert "BatchNormalization" in op_types(src) and "BatchNormalization" not in op_types(out)
    feed = feeds(batch, hw)
    for want, got in zip(ort_outputs(src, feed), ort_outputs(out, feed), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_run_checked_every_input_and_output_at_two_batch_sizes(folded):
    _, _, _, report = folded
    assert report["input_shapes"] == SHAPES and report["input_shape"] == SHAPES["image"]
    checks = {(c["run"], c["batch"], c["output"]) for c in report["verify"]["checks"]}
    assert checks == {(run, b, o) for run in ("original_fp32", "onnx_cpu") for b in (1, 3)
                      for o in ("y", "boxes", "picked")}


def test_inspect_names_the_fold_and_the_shapes(folded, capsys):
    src = folded[0]
    assert main(["inspect", str(src), "--input-shape", "image=1,3,16,16", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [(f["norm"], f["into"]) for f in data["folded"]] == [("bn", "conv")]
    assert data["input_shapes"] == SHAPES


def _broken(out, d):
    """The folded file with its conv bias moved by 0.05: a wrong fold verify must catch."""
    model = onnx.load(str(out))
    conv = next(n for n in model.graph.node if n.op_type == "Conv")
    bias = next(i for i in model.graph.initializer if i.name == conv.input[2])
    bias.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(bias) + np.float32(0.05), bias.name))
    onnx.save(model, str(d / "broken.onnx"))
    return d / "broken.onnx"


@pytest.mark.parametrize("inputs", ["random", "npz"])
def test_verify_passes_the_folded_file_and_fails_a_wrong_one(folded, tmp_path, capsys, inputs):
    src, out, _, _ = folded
    broken = _broken(out, tmp_path)
    feed = feeds(batch=5, hw=12)
    np.savez(tmp_path / "x.npz", **feed)
    # the wrong file really is wrong, by onnxruntime on the original
    assert np.abs(ort_outputs(broken, feed)[0] - ort_outputs(src, feed)[0]).max() > 0.01
    given = ["--input-shape", "image=2,3,12,12"] if inputs == "random" else ["--inputs", str(tmp_path / "x.npz")]
    codes = {}
    for name, checked in (("folded", out), ("broken", broken)):
        codes[name] = main(["verify", str(src), str(checked), *given, "--json", str(tmp_path / f"{name}.json")])
    capsys.readouterr()
    assert codes == {"folded": 0, "broken": 1}
    data = json.loads((tmp_path / "folded.json").read_text())
    if inputs == "random":   # a dynamic batch: 1 and 3 as run checks, and the 2 given; one example of 3 rows
        assert data["verify"]["environment"]["batch_sizes"] == [1, 2, 3]
        assert data["inputs"]["shapes"] == {"image": [3, 3, 12, 12], "im_shape": [3, 2], "scale_factor": [3, 2],
                                            "valid": [3, 2], "channel": [1]}
    else:
        assert data["dataset"]["total"] == 5
        assert data["inputs"]["shapes"]["channel"] == [1] and data["inputs"]["shapes"]["image"] == [3, 12, 12]


def test_bench_times_both_files_at_each_batch_size(folded, tmp_path, capsys):
    src, out, _, _ = folded
    assert main(["bench", str(src), str(out), "--input-shape", "image=1,3,16,16", "--batch-sizes", "1,3",
                 "--rounds", "1", "--runs-per-round", "1", "--warmup", "1", "--creation-repeats", "1",
                 "--providers", "cpu", "--opt-levels", "all", "--json", str(tmp_path / "b.json")]) == 0
    capsys.readouterr()
    data = json.loads((tmp_path / "b.json").read_text())
    assert sorted((r["variant"], r["batch_size"]) for r in data["results"]) == [
        ("det", 1), ("det", 3), ("model", 1), ("model", 3)]
    assert data["config"]["input_shapes"] == SHAPES and data["sample_shape"] == SHAPES["image"][1:]


def test_generated_inputs_follow_each_input_dtype(tmp_path):
    """Floats are torch.randn with the input's seed (the seed plus its position), integers and bools 0 or 1."""
    import torch

    from normfold.cli.onnx_model import example_inputs
    from normfold.verify import read_onnx

    sig = read_onnx(detector(tmp_path / "det.onnx"))
    shapes = {"image": (4, 3, 8, 8), "im_shape": (64, 2), "scale_factor": (4, 2), "valid": (64, 2), "channel": (1,)}
    xs = dict(zip(sig.names, example_inputs(sig, shapes, seed=7), strict=True))
    assert {n: x.shape for n, x in xs.items()} == shapes
    assert {n: x.dtype.name for n, x in xs.items()} == {
        "image": "float32", "im_shape": "int64", "scale_factor": "float32", "valid": "bool", "channel": "int64"}
    for name, seed in (("image", 7), ("scale_factor", 9)):   # positions 0 and 2
        want = torch.randn(shapes[name], generator=torch.Generator().manual_seed(seed)).numpy()
        np.testing.assert_array_equal(xs[name], want)
    assert set(np.unique(xs["im_shape"])) == {0, 1} and set(np.unique(xs["valid"])) == {False, True}


# name: (extra arguments, what the one line says)
BAD_SHAPES = {
    "unknown-name": (["--input-shape", "image=1,3,16,16", "--input-shape", "imshape=1,2"],
                     "--input-shape imshape=1,2: {src} has no input 'imshape' (its inputs: image, im_shape, "
                     "scale_factor, valid, channel)"),
    "missing-shape": ([], "{src}: input 'image' has shape ['n', 3, 'h', 'w'] with symbolic axis 2 (h), axis 3 (w); "
                          "give --input-shape image=N,3,H,W (numbers)"),
    "unnamed-for-several": (["--input-shape", "1,3,16,16"],
                            "{src} takes 5 inputs (image, im_shape, scale_factor, valid, channel); name the shape "
                            "of each: --input-shape image=1,3,16,16"),
    "does-not-fit": (["--input-shape", "image=1,4,16,16"],
                     "--input-shape image=1,4,16,16 does not fit {src}: input 'image' has shape ['n', 3, 'h', 'w'] "
                     "(axis 1 must be 3, got 4)"),
    "named-and-unnamed": (["--input-shape", "image=1,3,16,16", "--input-shape", "1,2"],
                          "argument --input-shape: give one unnamed N,C,H,W (a model with one input) or "
                          "NAME=N,C,H,W per input, not both or twice"),
    "named-twice": (["--input-shape", "image=1,3,16,16", "--input-shape", "image=1,3,8,8"],
                    "argument --input-shape: input 'image' is given twice"),
    "no-name": (["--input-shape", "=1,3,16,16"], "expected NAME=N,C,H,W (an input's name before '='), got '=1,3,16,16'"),
}


def _argv(command, src, tmp_path):
    return {
        "run": ["run", str(src), "--out", str(tmp_path / "out")],
        "inspect": ["inspect", str(src)],
        "verify": ["verify", str(src), str(src)],
        "bench": ["bench", str(src), "--rounds", "1", "--runs-per-round", "1", "--warmup", "1",
                  "--creation-repeats", "1", "--providers", "cpu"],
    }[command] + ["--json", str(tmp_path / "r.json")]


def _one_error_line(capsys) -> str:
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and captured.out == "", captured
    return lines[0]


@pytest.mark.parametrize("command", ["run", "inspect", "verify", "bench"])
@pytest.mark.parametrize("case", BAD_SHAPES)
def test_a_bad_shape_exits_2_naming_it_before_any_work(tmp_path, capsys, command, case):
    src = detector(tmp_path / "det.onnx")
    extra, message = BAD_SHAPES[case]
    assert main(_argv(command, src, tmp_path) + extra) == 2
    line = _one_error_line(capsys)
    assert line.startswith("normfold") and "error: " in line and message.format(src=src) in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["det.onnx"]


def _npz(d, change):
    feed = feeds(batch=3, hw=12)
    change(feed)
    np.savez(d / "x.npz", **feed)
    return d / "x.npz"


# name: (how the .npz differs from the inputs, what the one line says)
BAD_NPZ = {
    "missing-input": (lambda f: f.pop("valid"), "x.npz has no array for the model's input 'valid' "
                                                "(keys: channel, im_shape, image, scale_factor)"),
    "float-for-integer": (lambda f: f.update(im_shape=f["im_shape"].astype(np.float32)),
                          "x.npz[im_shape] has dtype float32; input 'im_shape' is int64: give integer values"),
    "int-for-bool": (lambda f: f.update(valid=f["valid"].astype(np.int64)),
                     "x.npz[valid] has dtype int64; input 'valid' is bool: give bool values"),
    "wrong-channels": (lambda f: f.update(image=f["image"][:, :2]),
                       "input 'image' has shape ['n', 3, 'h', 'w'], the samples of --inputs have shape [2, 12, 12] "
                       "(axis 1 must be 3, got 2)"),
    "weight-input-shape": (lambda f: f.update(channel=np.zeros(2, np.int64)),
                           "input 'channel' has shape [1], the samples of --inputs have shape [2] "
                           "(axis 0 must be 1, got 2)"),
    "unknown-key": (lambda f: f.update(extra=np.zeros(3, np.float32)),
                    "x.npz: key 'extra' is not an input of the model"),
}


@pytest.mark.parametrize("command", ["run", "inspect", "verify", "bench"])
@pytest.mark.parametrize("case", BAD_NPZ)
def test_a_bad_npz_exits_2_naming_the_input(tmp_path, capsys, command, case):
    src = detector(tmp_path / "det.onnx")
    change, message = BAD_NPZ[case]
    npz = _npz(tmp_path, change)
    assert main(_argv(command, src, tmp_path) + ["--inputs", str(npz)]) == 2
    line = _one_error_line(capsys)
    assert line.startswith("normfold: error: ") and message in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["det.onnx", "x.npz"]


@pytest.mark.parametrize("command", ["run", "inspect", "bench"])
def test_the_npz_given_is_what_run_inspect_and_bench_feed(folded, tmp_path, capsys, command):
    """--inputs gives the shapes (and the values: run's folded file equals the original on them)."""
    src = folded[0]
    feed = feeds(batch=4, hw=10, seed=5)
    np.savez(tmp_path / "x.npz", **feed)
    argv = _argv(command, src, tmp_path) + ["--inputs", str(tmp_path / "x.npz")]
    if command == "bench":
        argv += ["--opt-levels", "all"]
    assert main(argv) == 0
    capsys.readouterr()
    data = json.loads((tmp_path / "r.json").read_text())
    shapes = {n: list(a.shape) for n, a in feed.items()}
    assert (data["config"]["input_shapes"] if command == "bench" else data["input_shapes"]) == shapes
    if command == "run":
        for want, got in zip(ort_outputs(src, feed), ort_outputs(tmp_path / "out" / "model.onnx", feed), strict=True):
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    if command == "bench":
        assert [r["batch_size"] for r in data["results"]] == [4]


@pytest.mark.parametrize("model, extra, message", [
    ("det.onnx", ["--input-shape", "image=1,3,8,8"], "and --input-shape exclude each other"),
    ("resnet18-bn", [], "feeds an .onnx MODEL; a PyTorch MODEL takes --input-shape"),
])
def test_inputs_with_a_shape_or_a_pytorch_model_exits_2(tmp_path, capsys, model, extra, message):
    detector(tmp_path / "det.onnx")
    np.savez(tmp_path / "x.npz", **feeds())
    spec = str(tmp_path / model) if model.endswith(".onnx") else model
    assert main(["run", spec, "--inputs", str(tmp_path / "x.npz"), "--out", str(tmp_path / "out"), *extra]) == 2
    assert message in _one_error_line(capsys)
    assert not (tmp_path / "out").exists()


def test_a_pytorch_model_refuses_a_named_shape(capsys):
    assert main(["inspect", "resnet18-bn", "--input-shape", "x=1,3,32,32"]) == 2
    assert "--input-shape x=...: a PyTorch MODEL takes one unnamed --input-shape N,C,H,W" in _one_error_line(capsys)
