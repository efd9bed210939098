"""The frozen statistics found again in a folded graph, carried forward, and the data-free mode built on them.
Checked against Monte Carlo sampling, torch's own BatchNorm parameters and onnxruntime runs."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch

from normfold.export import export_with_baseline
from normfold.quantize import QuantizeError, quantize
from normfold.quantize.equalize import equalize
from normfold.quantize.statistics import Moments, channel_affine, frozen_statistics, propagate, relu_moments

from ._digits import trained, write_sets


def test_relu_moments_match_sampling():
    rng = np.random.default_rng(0)
    mean, std = np.array([-1.5, 0.0, 0.7, 3.0]), np.array([0.5, 1.0, 2.0, 0.1])
    z = rng.standard_normal((2_000_000, 4)) * std + mean
    e, v = relu_moments(mean, std)
    np.testing.assert_allclose(e, np.maximum(z, 0).mean(axis=0), rtol=0, atol=3e-3)
    np.testing.assert_allclose(v, np.maximum(z, 0).var(axis=0), rtol=0, atol=6e-3)
    e0, v0 = relu_moments(np.array([-1.0, 2.0]), np.zeros(2))
    np.testing.assert_array_equal(e0, [0.0, 2.0])
    np.testing.assert_array_equal(v0, [0.0, 0.0])


def test_channel_affine_recovers_scales_and_offsets_and_refuses_the_rest():
    rng = np.random.default_rng(1)
    a = rng.standard_normal((2, 5, 3, 3))
    s = np.array([0.5, 2.0, 1.0, 7.0, 0.1])
    o = np.array([0.0, 1.0, -3.0, 0.2, 0.0])
    scale, offset = channel_affine(a, (a - o[None, :, None, None]) / s[None, :, None, None])
    np.testing.assert_allclose(scale, s, rtol=1e-10)
    np.testing.assert_allclose(offset, o, atol=1e-10)
    assert channel_affine(a, -a) is None                                   # a sign flip is not a scale
    b = a.copy()
    b[0, 2, 0, 0] += 1.0
    assert channel_affine(a, b) is None                                    # one element off
    flat = rng.standard_normal((1, 4))                                     # one value per channel: scale only
    np.testing.assert_array_equal(channel_affine(flat, flat / 2)[1], np.zeros(4))


@pytest.fixture(scope="module")
def digits_graphs(tmp_path_factory):
    model, data = trained("bn")
    d = tmp_path_factory.mktemp("stats")
    folded, unfolded = export_with_baseline(model, data.x_test[:1], d / "f.onnx", d / "u.onnx")
    return model, data, onnx.load(str(folded.path)), onnx.load(str(unfolded.path))


def test_frozen_statistics_are_the_models_batch_norms(digits_graphs):
    model, data, folded, unfolded = digits_graphs
    probe = data.x_test[:2].numpy()
    found = frozen_statistics(unfolded, folded, probe)
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert len(found) == len(norms) == 3
    for m in norms:
        beta, gamma = m.bias.detach().double().numpy(), m.weight.detach().double().abs().numpy()
        hits = [t for t, (b, g) in found.items() if b.shape == beta.shape
                and np.allclose(b, beta, rtol=1e-4, atol=1e-5) and np.allclose(g, gamma, rtol=1e-4, atol=1e-5)]
        assert len(hits) == 1
    # after equalization the first conv's channels are divided by s: the statistics follow
    equalized, report = equalize(folded)
    assert report.pairs
    moved = frozen_statistics(unfolded, equalized, probe)
    assert set(moved) == set(found)
    changed = [t for t in found if not np.allclose(found[t][0], moved[t][0])]
    assert changed                                                          # some channel was rescaled
    for t in changed:
        ratio = found[t][1] / moved[t][1]
        # one s per channel scales both: mean and std (the fit is exact to the probe's fp32 noise)
        np.testing.assert_allclose(moved[t][0] * ratio, found[t][0], rtol=0, atol=1e-4 * found[t][1].max())


def test_propagated_means_match_the_network_on_gaussian_statistics(digits_graphs):
    """Feed the first conv exactly what the statistics assume and compare the means of the next layers."""
    model, data, folded, unfolded = digits_graphs
    probe = data.x_test[:2].numpy()
    found = frozen_statistics(unfolded, folded, probe)
    first = next(n for n in folded.graph.node if n.op_type == "Relu")
    beta, gamma = found[first.input[0]]
    known = propagate(folded, found, Moments.gaussian(np.zeros(1), np.ones(1), 6.0), 6.0)
    mean, var = relu_moments(beta, gamma)
    np.testing.assert_allclose(known[first.output[0]].mean, mean)
    rng = np.random.default_rng(0)
    z = rng.standard_normal((400_000, beta.size)) * gamma + beta
    np.testing.assert_allclose(known[first.output[0]].mean, np.maximum(z, 0).mean(axis=0), atol=5e-3 * gamma.max())
    assert np.all(known[first.output[0]].low >= 0)


def test_data_free_quantizes_a_trained_model_without_calibration_data(tmp_path):
    model, data = trained("bn")
    _, test, labels = write_sets(data, tmp_path)
    int8, report = quantize(model, None, data_free=True, input_range=(0, 1), example_input=data.x_test[:1],
                            validation=test, labels=labels, latency=False)
    assert report.data["data_free"] is True and report.data["calibration"] is None
    assert report.data["ranges"]["tensors_with_frozen_statistics"] == 3
    assert "DATA-FREE" in report.data["summary"]
    assert [s.name for s in report.steps][0] == "data-free ranges"
    e = report.final.evaluation
    assert e.fp32_score > 0.9 and e.drop <= 0.02            # a trained model, measured on its test images
    assert any(n.op_type == "QuantizeLinear" for n in int8.graph.node)


def test_data_free_bad_input(tmp_path):
    model, data = trained("bn")
    cal, test, labels = write_sets(data, tmp_path)
    x = data.x_test[:1]
    with pytest.raises(QuantizeError, match="--input-range"):
        quantize(model, None, data_free=True, example_input=x, validation=test)
    with pytest.raises(QuantizeError, match="not both"):
        quantize(model, cal, data_free=True, input_range=(0, 1), example_input=x, validation=test)
    with pytest.raises(QuantizeError, match="validation set"):
        quantize(model, None, data_free=True, input_range=(0, 1), example_input=x)


def test_high_bias_absorption_on_request_is_exact_on_the_calibration_data(tmp_path):
    """Conv -> BN -> ReLU -> 1x1 Conv: the consumer has no padding, so the pair absorbs; with bounds from the
    calibration data's minima the fp32 outputs do not move on those samples."""
    from normfold.quantize import QuantOptions
    from normfold.zoo.populate import populate

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.BatchNorm2d(8), torch.nn.ReLU(),
                                torch.nn.Conv2d(8, 4, 1), torch.nn.Flatten(), torch.nn.Linear(4 * 6 * 6, 5))
    model = populate(model, (16, 3, 6, 6), seed=0).eval()
    with torch.no_grad():
        model[1].bias.fill_(3.0)                                   # a high bias: most of the ReLU's input > 0
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "cal.npz", x=rng.standard_normal((16, 3, 6, 6)).astype(np.float32))
    _, off = quantize(model, tmp_path / "cal.npz", example_input=torch.randn(1, 3, 6, 6), latency=False,
                      measure_steps=False)
    _, on = quantize(model, tmp_path / "cal.npz", example_input=torch.randn(1, 3, 6, 6), latency=False,
                     measure_steps=False, options=QuantOptions(absorb_high_bias=True))
    assert off.absorbed == [] and len(on.absorbed) == 1
    assert on.absorbed[0]["channels"] > 0 and on.absorbed[0]["max_c"] > 0
    assert on.equalization_fp32_change < 1e-5                      # exact on the calibration samples
