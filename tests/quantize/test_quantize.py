"""normfold.quantize on a digits CNN trained here: the report's numbers against an independent onnxruntime run,
the file is INT8, each step measured, and the search keeps nodes in float until a gate holds."""
from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from normfold.quantize import QuantizeError, QuantOptions, quantize

from ._digits import onnx_accuracy, trained, write_sets


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    model, data = trained("bn")
    out = tmp_path_factory.mktemp("digits")
    cal, test, labels = write_sets(data, out)
    work = out / "work"
    work.mkdir()
    int8, report = quantize(model, cal, example_input=data.x_test[:1], validation=test, labels=labels,
                            max_accuracy_drop=0.01, latency=False, workdir=work)
    return model, data, int8, report, work


def test_report_accuracy_is_what_onnxruntime_gives(digits):
    model, data, int8, report, work = digits
    x, y = data.x_test.numpy(), data.y_test.numpy()
    fp32_acc, fp32_pred = onnx_accuracy(work / "model.onnx", x, y)
    int8_acc, int8_pred = onnx_accuracy(work / "model.int8.onnx", x, y)
    with torch.no_grad():
        torch_acc = float((model(data.x_test).argmax(1) == data.y_test).float().mean())
    final = report.final.evaluation
    assert final.fp32_score == pytest.approx(fp32_acc, abs=1e-12)
    assert final.int8_score == pytest.approx(int8_acc, abs=1e-12)
    assert fp32_acc == pytest.approx(torch_acc, abs=1 / 360 + 1e-12)   # the fold changes no prediction beyond a tie
    assert final.samples == 360
    [out] = final.outputs
    assert out.agreement == pytest.approx(float((fp32_pred == int8_pred).mean()), abs=1e-12)
    assert fp32_acc > 0.9                      # a trained model: the accuracy claim means something
    assert report.ok and final.drop <= 0.01


def test_the_int8_file_is_qdq_with_int8_weights(digits):
    _, _, int8, report, work = digits
    saved = onnx.load(str(work / "model.int8.onnx"))
    ops = {n.op_type for n in saved.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear", "Conv"} <= ops
    weights = {t.name: t for t in saved.graph.initializer}
    conv_weights = [n.input[1] for n in saved.graph.node if n.op_type == "DequantizeLinear"
                    and weights.get(n.input[0]) is not None and weights[n.input[0]].data_type == onnx.TensorProto.INT8]
    assert len(conv_weights) >= 3                            # every Conv's weight is stored as int8
    assert not report.final.float_nodes                       # nothing left in float on this model
    assert onnx.load(str(work / "model.onnx")).graph.node    # the folded fp32 file is there too
    assert not any(n.op_type == "BatchNormalization" for n in onnx.load(str(work / "model.onnx")).graph.node)


def test_each_step_is_measured_and_equalization_keeps_fp32(digits):
    _, _, _, report, _ = digits
    names = [s.name for s in report.steps]
    assert names[:4] == ["quantize_static minmax", "+ percentile calibration", "+ equalization", "+ bias correction"]
    assert report.equalization["pairs"]                      # DigitNet: conv -> relu -> conv pairs
    assert report.equalization_fp32_change < 1e-5            # exact up to fp32 rounding
    assert report.bias_changes and all(b.channels > 0 for b in report.bias_changes)
    assert report.node_errors and report.node_errors == sorted(report.node_errors, key=lambda e: e.sqnr_db)


def test_search_keeps_what_it_reports_in_float_and_the_gate_holds(tmp_path):
    model, data = trained("bn")
    cal, test, labels = write_sets(data, tmp_path)
    options = QuantOptions(per_channel=False, calibration="minmax", equalize=False)
    int8, report = quantize(model, cal, example_input=data.x_test[:1], validation=test, min_agreement=1.0,
                            options=options, latency=False, measure_steps=False)
    if report.steps[0].evaluation.agreement == 1.0:
        pytest.skip("per-tensor MinMax INT8 already agrees on every test image: nothing to search")
    assert report.search                                      # the gate failed, so it searched
    _, pred_fp32 = onnx_accuracy_of(report.folded_model, data)
    with tempfile.TemporaryDirectory() as tmp:
        onnx.save(int8, Path(tmp) / "int8.onnx")
        _, pred_int8 = onnx_accuracy(Path(tmp) / "int8.onnx", data.x_test.numpy(), data.y_test.numpy())
    agreement = float((pred_fp32 == pred_int8).mean())
    assert report.final.evaluation.agreement == pytest.approx(agreement, abs=1e-12)   # independent run
    assert report.ok == (agreement == 1.0)
    dq_fed = {o for n in int8.graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    computed_in_float = {n.name for n in int8.graph.node if n.op_type in ("Conv", "Gemm")
                         and not any(i in dq_fed for i in n.input)}
    for name in report.kept_float:                            # each node named as kept float is float
        node = next(n for n in int8.graph.node if n.name == name)
        assert not any(i in dq_fed for i in node.input), name
    if report.quantized_op_types:                             # an op-type tier: every other compute op is float
        other = {n.name for n in int8.graph.node if n.op_type in ("Conv", "Gemm")
                 and n.op_type not in report.quantized_op_types}
        assert other <= computed_in_float
    assert set(report.final.float_nodes) == computed_in_float
    # a layer left in float keeps its own bias: bias correction is for quantized weights only
    folded = {t.name: t.raw_data or t.SerializeToString() for t in report.folded_model.graph.initializer}
    final = {t.name: t.raw_data or t.SerializeToString() for t in int8.graph.initializer}
    for n in int8.graph.node:
        if n.name in computed_in_float and len(n.input) > 2 and n.input[2] in folded:
            assert final[n.input[2]] == folded[n.input[2]], n.name
    assert report.bias_changes                                # and the quantized ones were corrected


@pytest.mark.parametrize("passing_from, expected_tries", [
    (5, [1, 2, 4, 8, 6, 5]),          # doubling to 8, then bisection down to 5
    (1, [1]),
    (8, [1, 2, 4, 8, 6, 7]),
    (None, [1, 2, 4, 8, 10]),         # never: every size up to all 10 tried
])
def test_fewest_float_finds_the_smallest_passing_count(passing_from, expected_tries):
    from normfold.quantize.search import fewest_float

    ranked = [f"n{i}" for i in range(10)]
    seen = []

    def attempt(exclude):
        seen.append(len(exclude))
        assert exclude == ranked[:len(exclude)]                 # always the worst first
        ok = passing_from is not None and len(exclude) >= passing_from
        return ok, float(len(exclude)), "ok" if ok else "no"

    k, trials = fewest_float(ranked, attempt)
    assert k == passing_from
    assert seen == expected_tries
    assert [t.kept_float for t in trials] == expected_tries


def test_bad_input_is_refused_before_the_work(tmp_path):
    model, data = trained("bn")
    cal, test, labels = write_sets(data, tmp_path)
    x = data.x_test[:1]
    np.savez(tmp_path / "big.npz", x=np.zeros((4, 1, 16, 16), np.float32))
    with pytest.raises(QuantizeError, match="--calibrate"):
        quantize(model, tmp_path / "big.npz", example_input=x, latency=False)
    with pytest.raises(QuantizeError, match="no calibration data"):
        quantize(model, None, example_input=x)
    bad_labels = tmp_path / "bad.csv"
    bad_labels.write_text("0,1\n999,2\n")
    with pytest.raises(QuantizeError, match="999"):
        quantize(model, cal, example_input=x, validation=test, labels=bad_labels, latency=False)
    metric = tmp_path / "m.py"
    metric.write_text("def few(outputs, labels):\n    return [1.0]\n\ndef broken(\n")
    with pytest.raises(QuantizeError, match="importing"):
        quantize(model, cal, example_input=x, validation=test, labels=labels, metric=f"{metric}:few")
    metric.write_text("def few(outputs, labels):\n    return [1.0]\n")
    with pytest.raises(QuantizeError, match="returned 1 scores for a batch of"):
        quantize(model, cal, example_input=x, validation=test, labels=labels, metric=f"{metric}:few", latency=False)
    with pytest.raises(QuantizeError, match="needs labels"):
        quantize(model, cal, example_input=x, validation=test, max_accuracy_drop=0.01)


def test_quantized_and_fp16_files_are_refused(tmp_path, digits):
    _, data, _, _, work = digits
    cal, _, _ = write_sets(data, tmp_path)
    with pytest.raises(QuantizeError, match="already quantized .*QuantizeLinear"):
        quantize(work / "model.int8.onnx", cal)
    from normfold.export import export

    model, _ = trained("bn")
    half = export(model, data.x_test[:1], tmp_path / "half.onnx", precision="fp16").path
    with pytest.raises(QuantizeError, match="is float16"):
        quantize(half, cal)


def test_user_metric_gets_outputs_and_string_labels(tmp_path):
    model, data = trained("bn")
    cal, test, _ = write_sets(data, tmp_path)
    names = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
    labels = tmp_path / "words.csv"
    labels.write_text("name,label\n" + "".join(f"{i},{names[int(y)]}\n" for i, y in enumerate(data.y_test)))
    metric = tmp_path / "words.py"
    metric.write_text(
        "import numpy as np\n"
        f"NAMES = {names!r}\n"
        "def word(outputs, labels):\n"
        "    assert isinstance(outputs, list) and all(isinstance(o, np.ndarray) for o in outputs)\n"
        "    assert all(isinstance(l, str) for l in labels)\n"
        "    return [float(NAMES[int(i)] == l) for i, l in zip(outputs[0].argmax(1), labels)]\n")
    _, report = quantize(model, cal, example_input=data.x_test[:1], validation=test, labels=labels,
                         metric=f"{metric}:word", latency=False, measure_steps=False)
    fp32_acc, _ = onnx_accuracy_of(report.folded_model, data)
    assert report.final.evaluation.fp32_score == pytest.approx(fp32_acc, abs=1e-12)


def onnx_accuracy_of(proto, data):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "m.onnx"
        onnx.save(proto, path)
        return onnx_accuracy(path, data.x_test.numpy(), data.y_test.numpy())


@pytest.mark.parametrize("ratio, said", [(0.8, "int8 1.25x slower than folded"), (2.0, "int8 2.00x faster than folded")])
def test_report_says_which_way_the_latency_went(ratio, said):
    from normfold.quantize.evaluate import Evaluation, OutputErrors
    from normfold.quantize.report import Gate, QuantReport, Step

    e = Evaluation(1, [OutputErrors("y", None, None, 0.1, 0.1, 20.0)])
    r = QuantReport("m", [1], {}, {"summary": ""}, {}, True, Gate(), steps=[Step("s", e)],
                    latency=[{"batch_size": 1, "numerator": "folded", "latency_ratio": ratio, "provider": "cpu",
                              "optimization": "all"}])
    assert said in "\n".join(r.lines())


def test_a_final_softmax_stays_float(tmp_path):
    """onnxruntime fixes a Softmax output's range to [0, 1] in steps of 1/255: 1000 probabilities near 0.001
    would all quantize to 0. The Softmax stays float, and its output keeps its resolution."""
    from normfold.zoo.populate import populate

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.BatchNorm2d(8), torch.nn.ReLU(),
                                torch.nn.Flatten(), torch.nn.Linear(8 * 4 * 4, 1000), torch.nn.Softmax(dim=1))
    model = populate(model, (8, 3, 6, 6), seed=0).eval()
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "cal.npz", x=rng.standard_normal((16, 3, 6, 6)).astype(np.float32))
    int8, report = quantize(model, tmp_path / "cal.npz", example_input=torch.randn(1, 3, 6, 6), latency=False,
                            measure_steps=False)
    [softmax] = [n for n in int8.graph.node if n.op_type == "Softmax"]
    assert not any(n.op_type == "QuantizeLinear" and softmax.output[0] in n.input for n in int8.graph.node)
    assert softmax.output[0] in {o.name for o in int8.graph.output}        # its output reaches the user in float
    assert any(n.op_type == "QuantizeLinear" for n in int8.graph.node)          # the rest is INT8
    [out] = report.final.evaluation.outputs
    assert out.sqnr_db > 20 and out.agreement > 0.5
