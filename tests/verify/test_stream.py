"""verify_dataset against independent computations on the same batches: torch eager and onnxruntime
run here, statistics with numpy, labels whose accuracy is known by construction."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from normfold import export, fold
from normfold.verify import InputError, verify_dataset
from normfold.verify.stream import default_batch_size

from . import _models
from .conftest import bias_shifted, flipping_shift, perturbed

N, BATCH = 26, 8


def _eager(model, x, dtype=torch.float32):
    m = copy.deepcopy(model).eval().to(dtype)
    with torch.no_grad():
        out = m(*(torch.from_numpy(t).to(dtype) for t in x))
    return [o.double().numpy() for o in (out if isinstance(out, tuple) else (out,))]


def _ort(path, x):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    s = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    return [o.astype(np.float64) for o in s.run(None, {i.name: t for i, t in zip(s.get_inputs(), x)})]


def _in_batches(fn, xs, batch=BATCH):
    """fn over consecutive batches (as the stream runs them), outputs concatenated."""
    parts = [fn(tuple(x[i:i + batch] for x in xs)) for i in range(0, len(xs[0]), batch)]
    return [np.concatenate(o) for o in zip(*parts)]


def _expected(ref, got):
    """(max, p99 of per-sample max, mean) of |got - ref|, computed here."""
    d = np.abs(got - ref).reshape(len(ref), -1)
    return d.max(), np.percentile(d.max(1), 99), d.mean()


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("stream")
    x = np.random.default_rng(7).random((N, 3, 16, 16)).astype(np.float32)
    np.savez(d / "x.npz", x=x)
    return d, x


def test_faithful_export_every_sample_against_the_original(bn, data):
    model, _, path, _ = bn
    d, x = data
    report = verify_dataset(model, path, d / "x.npz", batch_size=BATCH, oracle_samples=6, seed=3)
    assert report.ok and report.samples == N and report.batch_size == BATCH
    (row,) = report.rows
    ref = _in_batches(lambda b: _eager(model, b), (x,))[0]
    got = _in_batches(lambda b: _ort(path, b), (x,))[0]
    for value, expected in zip((row.max_abs, row.p99_abs, row.mean_abs), _expected(ref, got)):
        assert value == pytest.approx(expected, rel=1e-9, abs=1e-15)
    assert row.over == [] and row.max_abs < row.allowed
    assert row.top1_agree == int((ref.argmax(1) == got.argmax(1)).sum())
    chosen = np.sort(np.random.default_rng(3).choice(N, 6, replace=False))
    assert report.oracle_indices == chosen.tolist()
    assert {c.batch for c in report.oracle.checks} == {1, 3, 6}


def test_every_drawn_sample_meets_the_oracle_whatever_batch_sizes_are_asked_for(bn, data):
    """The rule says the oracle checked m samples: it must have run at batch m, not only at the sizes given."""
    model, _, path, _ = bn
    d, _ = data
    report = verify_dataset(model, path, d / "x.npz", batch_size=BATCH, oracle_samples=6, oracle_batch_sizes=(1,))
    assert {c.batch for c in report.oracle.checks} == {1, 6}
    assert len(report.oracle_indices) == 6 and "6 samples" in report.rule


def test_changed_predictions_are_named(bn, data, tmp_path):
    model, _, path, _ = bn
    d, x = data
    ref = _in_batches(lambda b: _eager(model, b), (x,))[0]
    cls, shift = flipping_shift(ref)
    bad = bias_shifted(path, tmp_path / "shifted.onnx", "fc.bias", {cls: shift})
    got = _in_batches(lambda b: _ort(bad, b), (x,))[0]
    flips = np.flatnonzero(ref.argmax(1) != got.argmax(1))
    assert 0 < len(flips) < N, "the construction must change some predictions, not all"
    report = verify_dataset(model, bad, d / "x.npz", batch_size=BATCH, oracle_samples=4, atol=10.0 * shift,
                            min_agreement=1.0)
    (row,) = report.rows
    assert row.disagree == flips.tolist() and row.disagree_names == [str(i) for i in flips]
    assert row.top1_agree == N - len(flips) and row.over == []
    top5 = lambda a: np.argsort(-a, axis=1)[:, :5]
    overlap = np.mean([len(set(p) & set(q)) / 5 for p, q in zip(top5(ref), top5(got))])
    assert row.top5 == pytest.approx(overlap, rel=1e-12)
    assert not report.ok and any("--min-agreement 1" in f for f in report.failures)



def test_samples_over_an_explicit_atol_are_the_ones_numpy_finds(bn, data, tmp_path):
    model, _, path, _ = bn
    d, x = data
    bad = perturbed(path, tmp_path / "fc.onnx", "fc.weight", 1.01)     # an error that differs per sample
    ref = _in_batches(lambda b: _eager(model, b), (x,))[0]
    per = np.abs(_in_batches(lambda b: _ort(bad, b), (x,))[0] - ref).max(1)
    atol = float(np.median(per))
    report = verify_dataset(model, bad, d / "x.npz", batch_size=BATCH, oracle_samples=4, atol=atol)
    expected = np.flatnonzero(per > atol)
    assert 0 < len(expected) < N
    assert report.rows[0].over == expected.tolist() and report.rows[0].over_names == [str(i) for i in expected]
    assert not report.ok and report.rows[0].allowed == atol


def test_a_wrong_fold_puts_every_sample_over_the_derived_tolerance(bn, data, tmp_path):
    model, _, path, _ = bn
    d, _ = data
    bad = perturbed(path, tmp_path / "bad.onnx", "stem.weight", 1.001)
    report = verify_dataset(model, bad, d / "x.npz", batch_size=BATCH, oracle_samples=4)
    assert not report.oracle.ok and len(report.rows[0].over) == N and not report.ok


@pytest.mark.parametrize("right", [N, 20, 0], ids=["all_right", "20_right", "none_right"])
def test_accuracy_from_labels_known_by_construction(bn, data, tmp_path, right):
    model, _, path, _ = bn
    d, x = data
    pred = _in_batches(lambda b: _eager(model, b), (x,))[0].argmax(1)
    labels = np.where(np.arange(N) < right, pred, (pred + 1) % 10)
    (tmp_path / "labels.csv").write_text("".join(f"{i},{y}\n" for i, y in enumerate(labels)))
    report = verify_dataset(model, path, d / "x.npz", labels=tmp_path / "labels.csv", batch_size=BATCH,
                            oracle_samples=4, min_accuracy=0.5, max_accuracy_drop=0.0)
    assert report.accuracy == {"original_fp32": right / N, "onnx_cpu": right / N}
    assert report.ok == (right / N >= 0.5)


def test_fixed_batch_file_pads_the_last_batch(bn, data, tmp_path):
    model, _, _, _ = bn
    d, x = data
    fixed = export(model, torch.from_numpy(x[:4]), tmp_path / "fixed.onnx", dynamic_batch=False).path
    report = verify_dataset(model, fixed, d / "x.npz", oracle_samples=4)
    assert report.batch_size == 4 and report.samples == N and report.ok
    ref = _in_batches(lambda b: _eager(model, b), (x,), 4)[0]
    pad = lambda b: tuple(np.concatenate([t, np.repeat(t[-1:], 4 - len(t), 0)]) for t in b)
    got = _in_batches(lambda b: [o[:len(b[0])] for o in _ort(fixed, pad(b))], (x,), 4)[0]
    assert report.rows[0].max_abs == pytest.approx(_expected(ref, got)[0], rel=1e-9, abs=1e-15)


def test_onnx_oracle_and_folded_eager(bn, data, tmp_path):
    model, x0, path, _ = bn
    d, x = data
    unfolded = export(model, x0, tmp_path / "unfolded.onnx", fold=False).path
    report = verify_dataset(unfolded, path, d / "x.npz", batch_size=BATCH, oracle_samples=4)
    ref = _in_batches(lambda b: _ort(unfolded, b), (x,))[0]
    got = _in_batches(lambda b: _ort(path, b), (x,))[0]
    assert report.reference_run == "original_fp32" and report.ok
    assert report.rows[0].max_abs == pytest.approx(_expected(ref, got)[0], rel=1e-9, abs=1e-15)

    with_folded = verify_dataset(model, path, d / "x.npz", batch_size=BATCH, oracle_samples=4, folded=True)
    rows = {r.run: r for r in with_folded.rows}
    folded_model = fold(model, x0).model
    ref = _in_batches(lambda b: _eager(model, b), (x,))[0]
    got = _in_batches(lambda b: _eager(folded_model, b), (x,))[0]
    assert rows["folded_fp32"].max_abs == pytest.approx(_expected(ref, got)[0], rel=1e-9, abs=1e-15)
    assert set(rows) == {"folded_fp32", "onnx_cpu"} and with_folded.ok


def test_two_inputs_two_outputs_reported_per_output(tmp_path):
    model = _models.two_inputs()
    rng = np.random.default_rng(8)
    image = rng.random((11, 3, 16, 16)).astype(np.float32)
    mask = rng.random((11, 1, 16, 16)).astype(np.float32)
    path = export(model, (torch.from_numpy(image[:2]), torch.from_numpy(mask[:2])), tmp_path / "two.onnx").path
    np.savez(tmp_path / "d.npz", image=image, mask=mask)
    report = verify_dataset(model, path, tmp_path / "d.npz", batch_size=4, oracle_samples=5)
    ref = _in_batches(lambda b: _eager(model, b), (image, mask), 4)
    got = _in_batches(lambda b: _ort(path, b), (image, mask), 4)
    rows = {r.output: r for r in report.rows}
    assert len(rows) == 2 and report.ok
    for row, r, g in zip(report.rows, ref, got):
        assert row.max_abs == pytest.approx(_expected(r, g)[0], rel=1e-9, abs=1e-15)
    logits, fmap = report.rows
    assert logits.top1_agree == 11 and fmap.top1_agree is None and fmap.top5 is None


def test_progress_reports_every_sample(bn, data):
    model, _, path, _ = bn
    d, _ = data
    seen = []

    class Record:
        def stage(self, description, total):
            seen.append((description, total))

        def advance(self, samples):
            seen.append(samples)

    verify_dataset(model, path, d / "x.npz", batch_size=BATCH, oracle_samples=4, progress=Record())
    assert seen[0] == ("float64 oracle on 4 samples", None) and seen[1] == (f"{N} samples, batch {BATCH}", N)
    assert seen[2:] == [8, 8, 8, 2]


def test_a_label_beyond_the_classes_is_named(bn, data, tmp_path):
    model, _, path, _ = bn
    d, _ = data
    (tmp_path / "l.csv").write_text("".join(f"{i},{12 if i == 5 else 1}\n" for i in range(N)))
    with pytest.raises(InputError, match="sample '5' has label 12, the output 'linear' has 10 classes"):
        verify_dataset(model, path, d / "x.npz", labels=tmp_path / "l.csv", batch_size=BATCH, oracle_samples=4)


def test_default_batch_size_is_bounded_by_input_bytes(bn, data):
    from normfold.verify import open_dataset, read_onnx

    _, _, path, _ = bn
    d, _ = data
    sig = read_onnx(path)
    data = open_dataset(d / "x.npz", list(zip(sig.names, sig.shapes)))
    assert default_batch_size(sig, data) == 32        # 3 KB per sample: the cap
    data.columns[0].sample_shape = (3, 1024, 1024)    # 12 MiB per sample: 2 fit in 32 MiB
    assert default_batch_size(sig, data) == 2


def test_a_label_beyond_the_classes_is_refused_before_the_stream(bn, data, tmp_path):
    """The class count is known once the oracle phase ends: the last sample's bad label stops the run there,
    not after every batch before it has been streamed."""
    model, _, path, _ = bn
    d, _ = data
    (tmp_path / "l.csv").write_text("".join(f"{i},{12 if i == N - 1 else 1}\n" for i in range(N)))
    stages = []

    class Record:
        def stage(self, description, total):
            stages.append(description)

        def advance(self, samples):
            stages.append(samples)

    with pytest.raises(InputError, match=f"sample '{N - 1}' has label 12, the output 'linear' has 10 classes"):
        verify_dataset(model, path, d / "x.npz", labels=tmp_path / "l.csv", batch_size=BATCH, oracle_samples=4,
                       progress=Record())
    assert stages == ["float64 oracle on 4 samples"]


def test_the_model_is_folded_and_cast_once(bn, data, monkeypatch):
    """--folded streams the model verify() already folded; each dtype's copy of the user's model is made once
    (not per batch), and the user's model is left as it was."""
    from normfold.verify import check, oracle

    model, _, path, _ = bn
    d, _ = data
    before = {k: v.clone() for k, v in model.state_dict().items()}
    folds, casts = [], []
    prepare, cast_copy = check.prepare, oracle.cast_copy
    monkeypatch.setattr(check, "prepare", lambda m, *a, **k: folds.append(k.get("fold")) or prepare(m, *a, **k))
    monkeypatch.setattr(oracle, "cast_copy", lambda m, t: casts.append((m is model, t)) or cast_copy(m, t))
    report = verify_dataset(model, path, d / "x.npz", batch_size=BATCH, oracle_samples=6, folded=True)
    assert report.ok and {r.run for r in report.rows} == {"folded_fp32", "onnx_cpu"}
    assert folds == [True]
    assert sorted(str(t) for mine, t in casts if mine) == ["torch.float32", "torch.float64"]
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
