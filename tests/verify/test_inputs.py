"""Input sources: images and arrays from disk, seeded random draws, normalization, batches."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from normfold.verify.dataset import load_samples
from normfold.verify.inputs import InputError, batch_of, normalize, random_batch


def test_directory_of_images_and_arrays(tmp_path):
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "a.png")
    sample = rng.standard_normal((3, 16, 16)).astype(np.float32)
    np.save(tmp_path / "b.npy", sample)
    batch = rng.standard_normal((2, 3, 16, 16)).astype(np.float32)
    np.save(tmp_path / "c.npy", batch)
    (tmp_path / "notes.txt").write_text("ignored: not an input")
    x = load_samples(tmp_path, rank=4)
    assert x.shape == (4, 3, 16, 16) and x.dtype == np.float32
    np.testing.assert_array_equal(x[0], rgb.transpose(2, 0, 1) / np.float32(255))   # PNG is lossless
    np.testing.assert_array_equal(x[1], sample)
    np.testing.assert_array_equal(x[2:], batch)


def test_npz_samples_sorted_by_key(tmp_path):
    a, b = np.ones((3, 4, 4)), np.zeros((2, 3, 4, 4))
    np.savez(tmp_path / "in.npz", b=b, a=a)
    x = load_samples(tmp_path / "in.npz", rank=4)
    np.testing.assert_array_equal(x, np.concatenate([a[None], b]).astype(np.float32))


@pytest.mark.parametrize("case, expect", [
    ("garbage_png", "cannot read"),
    ("mixed_shapes", "sample shape"),
    ("wrong_rank", "expected a sample of 3 axes or a batch of 4"),
    ("empty", "holds no .png/.jpg/.npy"),
    ("missing", "does not exist"),
])
def test_unreadable_inputs_name_the_file(tmp_path, case, expect):
    d = tmp_path / "in"
    d.mkdir()
    if case == "garbage_png":
        (d / "broken.png").write_bytes(b"not a png")
        expect = "broken.png"
    elif case == "mixed_shapes":
        np.save(d / "a.npy", np.zeros((3, 8, 8)))
        np.save(d / "b.npy", np.zeros((3, 9, 8)))
    elif case == "wrong_rank":
        np.save(d / "a.npy", np.zeros((8, 8)))
    elif case == "missing":
        d = tmp_path / "nowhere"
    with pytest.raises(InputError, match=expect):
        load_samples(d, rank=4)


def test_normalize_per_channel():
    x = np.random.default_rng(1).random((2, 3, 4, 4)).astype(np.float32)
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    expected = np.stack([(x[:, c].astype(np.float64) - mean[c]) / std[c] for c in range(3)], axis=1)
    np.testing.assert_allclose(normalize(x, mean, std), expected, rtol=1e-6, atol=1e-7)
    with pytest.raises(InputError, match="--mean has 2 values, the input has 3 channels"):
        normalize(x, (0.5, 0.5), None)


def test_random_batches_are_seeded_and_in_range():
    u = random_batch((64, 3, 4, 4), "uniform", seed=5, low=-2.0, high=3.0)
    assert u.min() >= -2.0 and u.max() < 3.0 and u.std() > 1.0
    np.testing.assert_array_equal(u, random_batch((64, 3, 4, 4), "uniform", seed=5, low=-2.0, high=3.0))
    assert not np.array_equal(random_batch((2, 3), seed=0), random_batch((2, 3), seed=1))


def test_batch_of_keeps_given_rows_and_makes_distinct_extra_rows():
    x = np.arange(2 * 3 * 5, dtype=np.float32).reshape(2, 3, 5)
    b = batch_of(x, 3)
    np.testing.assert_array_equal(b[:2], x)
    assert not np.array_equal(b[2], x[0])
    np.testing.assert_array_equal(np.sort(b[2], axis=-1), np.sort(x[0], axis=-1))   # same values, shuffled
    np.testing.assert_array_equal(batch_of(x, 1), x[:1])
