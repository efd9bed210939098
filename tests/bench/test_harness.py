"""normfold.bench on a tiny model: the report's structure, the files it timed, the JSON."""
from __future__ import annotations

import collections
import json

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper

import normfold
from normfold.bench import BenchError, bench
from normfold.bench.session import SessionConfig, open_timed

from ._models import SAMPLE_SHAPE, tiny

BATCHES = (1, 3)
OPTS = ("disable", "all")
FAST = dict(rounds=3, runs_per_round=2, warmup=1, creation_repeats=2)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    directory = tmp_path_factory.mktemp("bench")
    model = tiny()
    x = torch.randn(1, *SAMPLE_SHAPE, generator=torch.Generator().manual_seed(0))
    report = bench(model, x, providers=("cpu",), batch_sizes=BATCHES, optimizations=OPTS, threads=1,
                   export_dir=directory, name="tiny", budget_ms=1e9, **FAST)
    return model, x, report, directory


def test_every_variant_is_measured_in_every_setting(exported):
    _, _, report, _ = exported
    assert [v.name for v in report.variants] == ["unfolded", "folded", "twin"]
    got = sorted((m.provider, m.optimization, m.batch_size, m.variant) for m in report.measurements)
    want = sorted(("cpu", o, b, v) for o in OPTS for b in BATCHES for v in ("unfolded", "folded", "twin"))
    assert got == want
    for m in report.measurements:
        assert [len(burst) for burst in m.rounds] == [FAST["runs_per_round"]] * FAST["rounds"]
        s = m.stats
        assert s.n == FAST["rounds"] * FAST["runs_per_round"]
        assert 0 < s.min_ms <= s.p50_ms <= s.p90_ms <= s.p99_ms
        assert s.throughput_per_s == pytest.approx(1000 * m.batch_size / s.mean_ms)
        assert s.mean_ms == pytest.approx(np.mean(m.samples()))
    sessions = sorted((s.variant, s.optimization, len(s.create_ms)) for s in report.sessions)
    assert sessions == sorted((v, o, FAST["creation_repeats"]) for v in ("unfolded", "folded", "twin") for o in OPTS)


def test_ratios_cover_both_pairs_in_every_setting(exported):
    _, _, report, _ = exported
    pairs = sorted((r.optimization, r.batch_size, r.numerator, r.denominator) for r in report.ratios())
    assert pairs == sorted((o, b, "folded", d) for o in OPTS for b in BATCHES for d in ("unfolded", "twin"))
    for r in report.ratios():
        assert r.latency_ratio > 0 and r.speedup == pytest.approx(1 / r.latency_ratio)


def _ops(path):
    return collections.Counter(n.op_type for n in onnx.load(path).graph.node)


def test_variant_files_are_what_their_names_say(exported):
    _, _, report, _ = exported
    ops = {v.name: _ops(v.path) for v in report.variants}
    assert ops["unfolded"]["BatchNormalization"] == 1          # the exporter did not fuse it
    assert ops["unfolded"]["MatMul"] >= 1                      # IterNorm's channel matrix is still there
    for name in ("folded", "twin"):
        assert ops[name]["Conv"] == 3 and ops[name]["Gemm"] == 1
        assert not {"BatchNormalization", "MatMul", "Sub"} & set(ops[name]), ops[name]
    assert len(report.fold["folded"]) == 3
    assert sorted(report.twin["replaced"]) == ["1", "4", "7"]


def test_folded_graph_is_the_twins_graph(exported):
    _, _, report, _ = exported
    paths = {v.name: v.path for v in report.variants}
    assert _ops(paths["folded"]) == _ops(paths["twin"])


def test_json_schema(exported):
    _, _, report, _ = exported
    data = json.loads(json.dumps(report.to_dict()))
    assert data["schema"] == "normfold.bench/1"
    assert set(data) == {"schema", "model", "sample_shape", "environment", "config", "variants", "sessions",
                         "results", "ratios", "skipped", "fold", "twin", "budget"}
    assert data["sample_shape"] == list(SAMPLE_SHAPE)
    assert data["config"]["intra_op_threads"] == 1 and data["config"]["batch_sizes"] == list(BATCHES)
    assert data["config"]["optimizations"] == ["ORT_DISABLE_ALL", "ORT_ENABLE_ALL"]
    assert data["environment"]["cpu_count"] >= 1 and data["environment"]["onnxruntime"]
    result_keys = {"variant", "kind", "provider", "optimization", "batch_size", "first_run_ms", "n", "mean_ms",
                   "std_ms", "min_ms", "p50_ms", "p90_ms", "p99_ms", "throughput_per_s"}
    assert len(data["results"]) == 12
    for r in data["results"]:
        assert set(r) == result_keys
        assert all(isinstance(r[k], (int, float)) for k in result_keys - {"variant", "kind", "provider", "optimization"})
    for s in data["sessions"]:
        assert s["create_ms_median"] == pytest.approx(float(np.median(s["create_ms"])))
    assert {r["denominator"] for r in data["ratios"]} == {"unfolded", "twin"}
    assert data["budget"]["ok"] is True and data["budget"]["percentile"] == 90
    assert {c["variant"] for c in data["budget"]["checks"]} == {"folded"}


def test_session_options_are_applied(tmp_path):
    path = tmp_path / "m.onnx"
    path.write_bytes(_fixed_batch_onnx_bytes())
    session, ms = open_timed(path, SessionConfig("cpu", "disable", intra_op_threads=1, inter_op_threads=2))
    opts = session.get_session_options()
    assert (opts.intra_op_num_threads, opts.inter_op_num_threads) == (1, 2)
    assert str(opts.graph_optimization_level).endswith("ORT_DISABLE_ALL")
    assert session.get_providers() == ["CPUExecutionProvider"]
    assert ms > 0
    for pool in ("intra", "inter"):  # interleaved sessions must not spin on each other's cores
        assert opts.get_session_config_entry(f"session.{pool}_op.allow_spinning") == "0"
    spinning, _ = open_timed(path, SessionConfig("cpu", "disable", intra_op_threads=1, spinning=True))
    assert spinning.get_session_options().get_session_config_entry("session.intra_op.allow_spinning") == "1"


def _fixed_batch_onnx_bytes() -> bytes:
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])], "fixed",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, *SAMPLE_SHAPE])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, *SAMPLE_SHAPE])],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=9).SerializeToString()


def test_onnx_files_only_and_a_fixed_batch_is_skipped_with_the_reason(tmp_path):
    path = tmp_path / "fixed.onnx"
    path.write_bytes(_fixed_batch_onnx_bytes())
    report = bench(onnx_files=[path], sample_shape=SAMPLE_SHAPE, providers=("cpu",), batch_sizes=(1, 2),
                   optimizations=("all",), **FAST)
    assert [(m.variant, m.kind, m.batch_size) for m in report.measurements] == [("fixed", "file", 1)]
    assert report.ratios() == []
    assert report.skipped == [{"what": "fixed cpu/all/b2", "reason": "the file fixes the batch dimension to 1"}]


@pytest.mark.parametrize("kwargs,match", [
    ({}, "nothing to benchmark"),
    ({"onnx_files": ["missing.onnx"], "sample_shape": SAMPLE_SHAPE}, "does not exist"),
    ({"onnx_files": ["x.onnx"]}, "sample_shape"),
    ({"onnx_files": ["x.onnx"], "sample_shape": SAMPLE_SHAPE, "providers": ("tpu",)}, "unknown provider"),
    ({"onnx_files": ["x.onnx"], "sample_shape": SAMPLE_SHAPE, "rounds": 0}, "rounds"),
    ({"onnx_files": ["x.onnx"], "sample_shape": SAMPLE_SHAPE, "export_dir": "out"}, "export_dir='out'.*nothing to export"),
])
def test_bad_arguments_are_named(kwargs, match):
    with pytest.raises(BenchError, match=match):
        bench(**kwargs)


def test_bench_is_exported_from_the_package():
    assert normfold.bench is bench


def test_a_file_that_rejects_the_sample_shape_is_named(tmp_path):
    path = tmp_path / "fixed.onnx"
    path.write_bytes(_fixed_batch_onnx_bytes())
    with pytest.raises(BenchError, match=r"fixed\.onnx.*axis 2 must be 8, got 9"):
        bench(onnx_files=[path], sample_shape=(3, 9, 9), providers=("cpu",), optimizations=("all",), **FAST)
