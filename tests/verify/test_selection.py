"""Outputs through TopK: near-tied rows may exchange places, a changed key still fails.

The graphs are the smallest detector head: rows (N, K, 5) = 4 box values and a
score, TopK over the score, the rows gathered in that order. The checked file
adds a ``delta`` to the scores (the score column of the rows included) before
the selection: two float32 ulps at one
row swaps it with its near-tied neighbour (a correct fold's round-off does
that); 0.1 is a different score. Whether rows moved is computed here with
onnxruntime, independently of normfold's matching.
"""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from normfold.verify import verify
from normfold.verify.selection import matched, selected_outputs

K = 8
TIED = (3, 6)   # score[6] is one float32 ulp above score[3]


def _head(path, delta: np.ndarray) -> str:
    nodes = [
        helper.make_node("Gather", ["x", "score_col"], ["score"], axis=2),
        helper.make_node("Add", ["score", "delta"], ["keyed"]),
        helper.make_node("Slice", ["x", "zero", "four", "axis2"], ["boxes"]),
        helper.make_node("Unsqueeze", ["keyed", "axis2"], ["keyed3"]),
        helper.make_node("Concat", ["boxes", "keyed3"], ["table"], axis=2),
        helper.make_node("TopK", ["keyed", "k"], ["values", "order"], axis=1),
        helper.make_node("Unsqueeze", ["order", "axis2"], ["order3"]),
        helper.make_node("Tile", ["order3", "reps"], ["index"]),
        helper.make_node("GatherElements", ["table", "index"], ["rows"], axis=1),
    ]
    inits = [numpy_helper.from_array(np.array(4, dtype=np.int64), "score_col"),
             numpy_helper.from_array(np.array([0], dtype=np.int64), "zero"),
             numpy_helper.from_array(np.array([4], dtype=np.int64), "four"),
             numpy_helper.from_array(delta.astype(np.float32), "delta"),
             numpy_helper.from_array(np.array([K], dtype=np.int64), "k"),
             numpy_helper.from_array(np.array([2], dtype=np.int64), "axis2"),
             numpy_helper.from_array(np.array([1, 1, 5], dtype=np.int64), "reps")]
    graph = helper.make_graph(
        nodes, "head", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", K, 5])],
        [helper.make_tensor_value_info("rows", TensorProto.FLOAT, ["N", K, 5]),
         helper.make_tensor_value_info("score", TensorProto.FLOAT, ["N", K])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return str(path)


def _inputs(n: int = 3) -> np.ndarray:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, K, 5)).astype(np.float32)
    x[:, :, 4] = np.linspace(0.1, 0.9, K, dtype=np.float32)
    x[:, TIED[0], 4] = np.float32(0.5)
    x[:, TIED[1], 4] = np.nextafter(np.float32(0.5), np.float32(1))
    return x


def _run(path, x):
    return ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(None, {"x": x})


@pytest.fixture
def files(tmp_path):
    zero = np.zeros(K)
    swap = zero.copy()
    swap[TIED[0]] = 2 * float(np.spacing(np.float32(0.5)))
    moved = zero.copy()
    moved[TIED[0]] = 0.1
    return {name: _head(tmp_path / f"{name}.onnx", d) for name, d in
            (("original", zero), ("swapped", swap), ("rescored", moved))}


def test_the_selected_output_is_found_and_the_raw_scores_are_not(files):
    assert selected_outputs(onnx.load(files["original"])) == {0: "TopK"}


def test_near_tied_rows_that_exchange_places_pass_and_the_report_says_how(files):
    x = _inputs()
    rows, _ = _run(files["original"], x)
    swapped, _ = _run(files["swapped"], x)
    assert np.abs(rows - swapped).max() > 0.1       # element-wise, the swap is a large difference
    report = verify(files["original"], files["swapped"], torch.from_numpy(x))
    assert report.ok, str(report)
    [note] = [n for n in report.notes if "TopK" in n]
    assert "'rows'" in note and "onnx_cpu at batch 1: 2 rows, onnx_cpu at batch 3: 6 rows" in note   # 2 per sample


def test_a_changed_key_still_fails(files):
    report = verify(files["original"], files["rescored"], torch.from_numpy(_inputs()))
    assert not report.ok
    assert {c.output for c in report.failures()} == {"rows"}   # the raw scores (before the Add) are the same


def test_matching_moves_only_rows_that_fit_another_place_better():
    rng = np.random.default_rng(1)
    oracle = rng.normal(size=(2, 6, 3))
    got = oracle + 1e-9
    got[1, [0, 5]] = got[1, [5, 0]]
    got[0, 2] += 0.5      # a changed row with no better place stays where it is
    out, moved = matched(oracle, got)
    assert moved == 2
    assert np.abs(out[1] - oracle[1]).max() < 1e-8
    assert np.array_equal(out[0], got[0])
