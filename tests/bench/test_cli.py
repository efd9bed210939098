"""normfold bench from the command line: exit codes, JSON and PNG outputs."""
from __future__ import annotations

import json

import pytest

from normfold.bench.session import cuda_unavailable_reason
from normfold.cli import main

from .._cuda import cuda_probe
from .test_harness import SAMPLE_SHAPE, _fixed_batch_onnx_bytes


def _relu_onnx_bytes(shape, repeats: int = 1) -> bytes:
    """``repeats`` Relu nodes in a row on an input declared as ``shape`` (ints or symbolic names)."""
    from onnx import TensorProto, helper

    names = ["x"] + [f"y{i}" for i in range(repeats)]
    nodes = [helper.make_node("Relu", [a], [b]) for a, b in zip(names, names[1:])]
    graph = helper.make_graph(nodes, "relus", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info(names[-1], TensorProto.FLOAT, shape)])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=9).SerializeToString()

FAST = ["--rounds", "2", "--runs-per-round", "2", "--warmup", "1", "--creation-repeats", "1",
        "--opt-levels", "all", "--providers", "cpu"]
SHAPE = ["--input-shape", "1,3,8,8"]

FACTORY = '''
import torch
from torch import nn
from normfold.zoo.populate import populate


def tiny():
    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                      nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
    return populate(m, (4, 3, 8, 8)).eval()
'''


@pytest.fixture
def onnx_file(tmp_path):
    path = tmp_path / "fixed.onnx"
    path.write_bytes(_fixed_batch_onnx_bytes())
    return path


@pytest.mark.parametrize("budget,code", [("1e9", 0), ("1e-9", 1)])
def test_budget_exit_code(onnx_file, budget, code, capsys):
    assert main(["bench", str(onnx_file), *SHAPE, *FAST, "--budget-ms", budget, "--percentile", "50"]) == code
    out = capsys.readouterr().out
    assert ("PASS" if code == 0 else "FAIL: over the latency budget") in out
    assert "p50" in out


def test_no_budget_exits_0_and_writes_json_and_png(onnx_file, tmp_path, capsys):
    js, png = tmp_path / "r.json", tmp_path / "r.png"
    assert main(["bench", str(onnx_file), *SHAPE, *FAST, "--batch-sizes", "1,2", "--json", str(js),
                 "--plot", str(png)]) == 0
    data = json.loads(js.read_text())
    assert data["schema"] == "normfold.bench/1" and data["budget"] is None
    assert [(r["variant"], r["batch_size"]) for r in data["results"]] == [("fixed", 1)]
    assert data["skipped"][0]["reason"] == "the file fixes the batch dimension to 1"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "skipped fixed cpu/all/b2" in capsys.readouterr().out


def test_model_from_a_factory_file(tmp_path, capsys):
    factory = tmp_path / "net.py"
    factory.write_text(FACTORY)
    js = tmp_path / "r.json"
    assert main(["bench", f"{factory}:tiny", *SHAPE, *FAST, "--json", str(js)]) == 0
    data = json.loads(js.read_text())
    assert [v["name"] for v in data["variants"]] == ["unfolded", "folded", "twin"]
    assert all(v["path"] is None for v in data["variants"])       # temporary exports, gone
    out = capsys.readouterr().out
    assert "folded/unfolded" in out and "folded/twin" in out


@pytest.mark.parametrize("extra,message", [
    (["--percentile", "90"], "--percentile applies to --budget-ms"),
    (["--budget-ms", "10", "--percentile", "0"], "--percentile must be in"),
    (["--budget-ms", "-1"], "--budget-ms must be positive"),
    (["--rounds", "0"], "--rounds must be >= 1"),
    (["--json", "/nonexistent/dir/r.json"], "does not exist"),
])
def test_bad_arguments_exit_2(onnx_file, extra, message, capsys):
    assert main(["bench", str(onnx_file), *SHAPE, *FAST, *extra]) == 2
    assert message in capsys.readouterr().err


def test_onnx_only_takes_the_input_shape_from_the_file(onnx_file, tmp_path, capsys):
    js = tmp_path / "r.json"
    assert main(["bench", str(onnx_file), *FAST, "--json", str(js)]) == 0
    data = json.loads(js.read_text())
    assert data["sample_shape"] == list(SAMPLE_SHAPE)
    assert [(r["variant"], r["batch_size"]) for r in data["results"]] == [("fixed", 1)]


def test_onnx_only_with_symbolic_dims_needs_an_input_shape(tmp_path, capsys):
    path = tmp_path / "symbolic.onnx"
    path.write_bytes(_relu_onnx_bytes(["n", 3, "h", "w"]))
    assert main(["bench", str(path), *FAST]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "symbolic axis 2 (h), axis 3 (w)" in err[0] and "--input-shape" in err[0]
    assert main(["bench", str(path), *FAST, "--input-shape", "2,3,5,7", "--json", str(tmp_path / "r.json")]) == 0
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["sample_shape"] == [3, 5, 7] and data["results"][0]["batch_size"] == 2


def test_two_files_are_timed_side_by_side_and_compared_with_the_first(tmp_path):
    first, second = tmp_path / "a.onnx", tmp_path / "b.onnx"
    first.write_bytes(_relu_onnx_bytes(["n", *SAMPLE_SHAPE]))
    second.write_bytes(_relu_onnx_bytes(["n", *SAMPLE_SHAPE], repeats=3))
    js = tmp_path / "r.json"
    assert main(["bench", str(first), str(second), *FAST, "--batch-sizes", "1,2", "--json", str(js)]) == 0
    data = json.loads(js.read_text())
    assert sorted((r["variant"], r["batch_size"]) for r in data["results"]) == [("a", 1), ("a", 2), ("b", 1), ("b", 2)]
    assert [(r["numerator"], r["denominator"], r["batch_size"]) for r in data["ratios"]] == [("b", "a", 1), ("b", "a", 2)]


def test_missing_onnx_file_exits_2(tmp_path, capsys):
    assert main(["bench", str(tmp_path / "nope.onnx"), *SHAPE, *FAST]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_refuses_to_overwrite_an_input(onnx_file, capsys):
    assert main(["bench", str(onnx_file), *SHAPE, *FAST, "--json", str(onnx_file)]) == 2
    assert "overwrite" in capsys.readouterr().err


def test_cuda_unavailable_reason_agrees_with_an_independent_probe():
    assert (cuda_unavailable_reason() is None) == (cuda_probe() is None), (cuda_unavailable_reason(), cuda_probe())


@pytest.mark.skipif(cuda_probe() is None, reason="CUDA is usable here; the refusal path needs a machine without it")
def test_cuda_requested_but_unavailable_exits_2(onnx_file, capsys):
    reason = cuda_unavailable_reason()
    assert main(["bench", str(onnx_file), *SHAPE, "--providers", "cuda"]) == 2
    err = capsys.readouterr().err
    assert "provider cuda was requested but is unavailable" in err and reason in err
