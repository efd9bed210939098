"""normfold.verify(): verdicts against the float64 oracle, localization, fp16, CUDA, bad input."""
from __future__ import annotations

import copy
import json
import re

import numpy as np
import onnx
import pytest
import torch

from normfold import export
from normfold.verify import InputError, SessionError, cuda_problem, verify

from .._cuda import cuda_probe
from ..conftest import fp32_budget, run_onnx
from .conftest import perturbed


def test_the_folded_model_is_copied_once_for_every_batch_size(bn, monkeypatch):
    """verify runs the folded eager model at each batch size on one copy of it, as the oracle
    does, not on a fresh deep copy per batch size (a large model would be copied 2-3 times)."""
    from normfold.verify import check, oracle

    model, x, path, _ = bn
    copied = []
    real = oracle.cast_copy

    def counting(m, dtype):
        copied.append(m is model)
        return real(m, dtype)

    for module in (check, oracle):
        monkeypatch.setattr(module, "cast_copy", counting, raising=False)
    report = verify(model, path, x, batch_sizes=(1, 3, 2))
    assert report.ok, str(report)
    assert sorted({c.batch for c in report.checks if c.run == "folded_fp32"}) == [1, 2, 3]
    assert copied.count(False) == 1   # the folded model: one copy; the original's own fp32 copy is the oracle's


def test_good_fold_passes_at_batch_1_and_3(bn):
    model, x, path, result = bn
    assert [f.norm for f in result.fold_report.folded] == ["bn1", "bn2"]
    report = verify(model, path, x)
    assert report.ok, str(report)
    assert {c.batch for c in report.checks} == {1, 3}
    assert {c.run for c in report.checks} == {"original_fp32", "folded_fp32", "onnx_cpu"}
    # The verdict agrees with an independent computation of the same rule.
    oracle, allowed = fp32_budget(model, x)
    onnx_row = next(c for c in report.checks if c.run == "onnx_cpu" and c.batch == 1)
    independent = float(np.abs(run_onnx(path, x) - oracle).max())
    assert onnx_row.stats.max_abs == pytest.approx(independent, rel=1e-6, abs=1e-12)
    assert onnx_row.allowed == pytest.approx(allowed, rel=1e-6)
    assert onnx_row.stats.top1 == 1.0 and onnx_row.stats.top5 == 1.0


@pytest.mark.parametrize("layer, site", [("conv2", "bn2 -> conv2"), ("stem", "bn1 -> stem")])
def test_perturbed_onnx_weight_fails_and_names_the_layer(bn, tmp_path, layer, site):
    model, x, path, _ = bn
    bad = tmp_path / "bad.onnx"
    perturbed(path, bad, f"{layer}.weight", 1.001)   # 0.1% on one layer
    report = verify(model, bad, x)
    assert not report.ok
    failed = {c.run for c in report.failures()}
    assert failed == {"onnx_cpu"}, str(report)   # the folded eager model is still right
    [where] = report.localization
    assert where.kind == "onnx node" and where.op_type == "Conv"
    assert where.module == layer and where.fold_site == site
    assert layer in "\n".join(report.lines())
    # The row says which tolerance would have passed: exactly the error it measured.
    row = report.failures()[0]
    assert row.min_passing["atol"] == row.stats.max_abs > row.allowed


def test_localization_in_small_chunks_finds_the_same_node(bn, tmp_path):
    model, x, path, _ = bn
    bad = tmp_path / "bad.onnx"
    perturbed(path, bad, "conv2.weight", 1.001)
    report = verify(model, bad, x, budget_bytes=1)   # one intermediate per pass
    assert [d.module for d in report.localization] == ["conv2"]


def test_fp16_export_verifies_against_its_own_fp16_error(bn, tmp_path):
    model, x, _, _ = bn
    path = tmp_path / "half.onnx"
    export(model, x, path, precision="fp16")
    assert onnx.load(str(path)).graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT16
    report = verify(model, path, x)
    assert report.ok, str(report)
    assert {c.run for c in report.checks} == {"original_fp16", "folded_fp16", "onnx_cpu"}
    # e_ref is float16's own error: independent of normfold, from torch in float16
    ref = next(c for c in report.checks if c.run == "original_fp16" and c.batch == 1)
    with torch.no_grad():
        e16 = (copy.deepcopy(model).half()(x.half()).double() - copy.deepcopy(model).double()(x.double())).abs().max()
    assert ref.stats.max_abs == pytest.approx(float(e16), rel=1e-6)
    # a 1% error on one fp16 layer is caught
    broken = verify(model, perturbed(path, tmp_path / "half_bad.onnx", "conv2.weight", 1.01), x)
    assert not broken.ok
    assert [d.module for d in broken.localization] == ["conv2"]


def test_explicit_atol_replaces_the_rule(bn, tmp_path):
    model, x, path, _ = bn
    bad = tmp_path / "bad.onnx"
    perturbed(path, bad, "conv2.weight", 1.001)
    strict = verify(model, bad, x, batch_sizes=(1,), localize=False)
    worst = max(c.stats.max_abs for c in strict.checks)
    assert verify(model, bad, x, atol=2 * worst, batch_sizes=(1,)).ok
    assert not verify(model, bad, x, atol=worst / 2, batch_sizes=(1,), localize=False).ok


def test_json_has_plain_numbers(bn, tmp_path):
    model, x, path, _ = bn
    bad = tmp_path / "bad.onnx"
    perturbed(path, bad, "conv2.weight", 1.001)
    data = json.loads(json.dumps(verify(model, bad, x).to_dict()))
    row = next(c for c in data["checks"] if c["run"] == "onnx_cpu")
    for key in ("max_abs", "max_rel", "mean_abs", "p99_abs", "cosine", "allowed"):
        assert type(row[key]) is float
    assert data["ok"] is False and data["localization"][0]["module"] == "conv2"
    assert data["environment"]["onnxruntime"] and data["environment"]["providers"]["cpu"] == {
        "CPUExecutionProvider": data["environment"]["providers"]["cpu"]["CPUExecutionProvider"]}


@pytest.mark.parametrize("problem", ["missing", "corrupt", "names", "shape", "provider", "nan", "fixed_batch"])
def test_bad_input_names_the_problem(bn, tmp_path, problem):
    model, x, path, _ = bn
    kwargs = {}
    if problem == "missing":
        path, expect = tmp_path / "nope.onnx", "does not exist"
    elif problem == "corrupt":
        (tmp_path / "c.onnx").write_bytes(path.read_bytes()[:200])
        path, expect = tmp_path / "c.onnx", "not a valid ONNX model"
    elif problem == "names":
        proto = onnx.load(str(path))
        proto.graph.input[0].name = "images"
        for node in proto.graph.node:
            node.input[:] = ["images" if i == "x" else i for i in node.input]
        onnx.save(proto, str(tmp_path / "n.onnx"))
        path, expect = tmp_path / "n.onnx", "['images']"
    elif problem == "shape":
        x, expect = torch.randn(1, 3, 8, 8), "axis 2 must be 16"
    elif problem == "provider":
        kwargs, expect = {"providers": ("tpu",)}, "unknown provider 'tpu'"
    elif problem == "nan":
        x = x.clone()
        x[0, 2, 3, 4] = float("nan")
        expect = "input 'x' holds NaN or infinite values (first at index [0, 2, 3, 4])"
    else:
        kwargs, expect = {"batch_sizes": (1, 3)}, "fixed batch size of 1"
        proto = onnx.load(str(path))
        proto.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 1
        onnx.save(proto, str(tmp_path / "fixed.onnx"))
        path = tmp_path / "fixed.onnx"
    with pytest.raises((SessionError, InputError), match=re.escape(expect)):
        verify(model, path, x, **kwargs)


def test_cuda_problem_agrees_with_an_independent_probe():
    assert (cuda_problem() is None) == (cuda_probe() is None), (cuda_problem(), cuda_probe())


@pytest.mark.skipif(cuda_probe() is not None, reason=f"no usable CUDA for onnxruntime: {cuda_probe()}")
def test_cuda_provider_runs_without_tf32(bn):
    model, x, path, _ = bn
    report = verify(model, path, x, providers=("cpu", "cuda"))
    assert report.ok, str(report)
    options = report.environment["providers"]["cuda"]["CUDAExecutionProvider"]
    assert options["use_tf32"] == "0"
    assert {c.run for c in report.checks} >= {"onnx_cpu", "onnx_cuda"}


@pytest.mark.skipif(cuda_probe() is None, reason="CUDA is usable here; the refusal path needs a machine without it")
def test_cuda_without_gpu_is_refused_with_a_reason(bn):
    model, x, path, _ = bn
    with pytest.raises(SessionError, match="--providers cuda: .*(CUDA|GPU)"):
        verify(model, path, x, providers=("cuda",))
