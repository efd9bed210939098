"""`normfold verify`: exit 0 pass, 1 failed check, 2 bad input or environment (naming the problem)."""
from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from PIL import Image

from normfold.cli import main

from .._cuda import cuda_probe
from .conftest import MODELS_FILE, perturbed

BN = f"{MODELS_FILE}:tiny_bn"


def test_pass_writes_json_with_plain_numbers(bn, tmp_path, capsys):
    _, _, path, _ = bn
    out = tmp_path / "report.json"
    assert main(["verify", BN, str(path), "--json", str(out)]) == 0
    assert "PASS" in capsys.readouterr().out
    data = json.loads(out.read_text())
    assert data["verify"]["ok"] is True
    assert data["verify"]["environment"]["batch_sizes"] == [1, 3]
    assert data["inputs"] == {"kind": "normal", "mean": 0.0, "std": 1.0, "seed": 0, "shape": [3, 16, 16],
                              "normalize_mean": None, "normalize_std": None}
    for row in data["verify"]["checks"]:
        assert all(type(row[k]) is float for k in ("max_abs", "max_rel", "mean_abs", "p99_abs", "cosine"))


def test_failed_check_exits_1_and_names_the_layer(bn, tmp_path, capsys):
    _, _, path, _ = bn
    bad = perturbed(path, tmp_path / "bad.onnx", "stem.weight", 1.001)
    assert main(["verify", BN, str(bad), "--batch-sizes", "1"]) == 1
    out = capsys.readouterr().out
    assert "would pass with atol >=" in out
    assert "module stem" in out and "fold site bn1 -> stem" in out


def test_real_images_with_mean_std(bn, tmp_path):
    _, _, path, _ = bn
    rng = np.random.default_rng(0)
    d = tmp_path / "images"
    d.mkdir()
    for i in range(2):
        Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(d / f"{i}.png")
    np.save(d / "2.npy", rng.random((3, 16, 16)).astype(np.float32))
    out = tmp_path / "r.json"
    argv = ["verify", BN, str(path), "--inputs", str(d), "--mean", "0.485,0.456,0.406",
            "--std", "0.229,0.224,0.225", "--json", str(out)]
    assert main(argv) == 0
    data = json.loads(out.read_text())
    assert data["inputs"]["samples"] == 3 and data["verify"]["environment"]["batch_sizes"] == [1, 3]


def test_uniform_inputs(bn, tmp_path):
    _, _, path, _ = bn
    out = tmp_path / "r.json"
    assert main(["verify", BN, str(path), "--uniform", "0,1", "--batch-sizes", "2", "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    assert data["inputs"]["kind"] == "uniform" and data["verify"]["environment"]["batch_sizes"] == [2]


@pytest.mark.parametrize("shape, sizes", [("1,3,16,16", [1, 3]), ("2,3,16,16", [1, 2, 3])])
def test_input_shape_checks_a_dynamic_batch_axis_at_1_and_3_as_run_does(bn, tmp_path, shape, sizes):
    _, _, path, _ = bn
    assert onnx.load(str(path)).graph.input[0].type.tensor_type.shape.dim[0].dim_param   # dynamic batch
    out = tmp_path / "r.json"
    assert main(["verify", BN, str(path), "--input-shape", shape, "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    assert data["verify"]["environment"]["batch_sizes"] == sizes
    assert sorted({c["batch"] for c in data["verify"]["checks"] if c["run"] == "onnx_cpu"}) == sizes


def test_precision_fp16_exports_beside_and_verifies(bn, tmp_path):
    _, _, path, _ = bn
    src = tmp_path / "model.onnx"
    src.write_bytes(path.read_bytes())
    out = tmp_path / "r.json"
    assert main(["verify", BN, str(src), "--precision", "fp16", "--batch-sizes", "1", "--json", str(out)]) == 0
    half = onnx.load(str(tmp_path / "model.fp16.onnx"))
    assert half.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT16
    assert src.read_bytes() == path.read_bytes()   # the input file is untouched
    data = json.loads(out.read_text())
    assert data["verify"]["environment"]["dtype"] == "float16"
    assert {c["run"] for c in data["verify"]["checks"]} == {"original_fp16", "folded_fp16", "onnx_cpu"}


def _renamed_input(path, dst):
    proto = onnx.load(str(path))
    proto.graph.input[0].name = "images"
    for node in proto.graph.node:
        node.input[:] = ["images" if i == "x" else i for i in node.input]
    onnx.save(proto, str(dst))
    return dst


@pytest.mark.parametrize("case, expect", [
    ("missing", "does not exist"),
    ("corrupt", "is not a valid ONNX model"),
    ("shape", "axis 2 must be 16"),
    ("names", "inputs are named ['images']"),
    ("other_model", "the model rejects inputs"),
    ("unreadable_inputs", "bad.jpg"),
    ("provider", "unknown provider 'tpu'"),
    ("json_dir", "does not exist"),
])
def test_bad_input_exits_2_naming_the_problem(bn, tmp_path, capsys, case, expect):
    _, _, path, _ = bn
    argv = ["verify", BN, str(path)]
    if case == "missing":
        argv[2] = str(tmp_path / "nope.onnx")
    elif case == "corrupt":
        (tmp_path / "c.onnx").write_bytes(b"\x08\x07garbage")
        argv[2] = str(tmp_path / "c.onnx")
    elif case == "shape":
        argv += ["--input-shape", "1,3,8,8"]
    elif case == "names":
        argv[2] = str(_renamed_input(path, tmp_path / "n.onnx"))
    elif case == "other_model":
        argv[1] = f"{MODELS_FILE}:tiny_one_channel"
    elif case == "unreadable_inputs":
        d = tmp_path / "in"
        d.mkdir()
        (d / "bad.jpg").write_bytes(b"\xff\xd8 truncated")
        argv += ["--inputs", str(d)]
    elif case == "provider":
        argv += ["--providers", "cpu,tpu"]
    else:
        argv += ["--json", str(tmp_path / "no" / "r.json")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("normfold: error:") and expect in err and len(err.strip().splitlines()) == 1


@pytest.mark.skipif(cuda_probe() is None, reason="CUDA is usable here; the refusal path needs a machine without it")
def test_cuda_without_gpu_exits_2_with_one_line(bn, capsys):
    _, _, path, _ = bn
    assert main(["verify", BN, str(path), "--providers", "cpu,cuda"]) == 2
    err = capsys.readouterr().err
    assert "--providers cuda:" in err and len(err.strip().splitlines()) == 1
