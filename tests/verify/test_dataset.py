"""The lazy dataset reader and labels: what each source reads, against numpy/PIL on the same files,
and bad input refused at open time naming the file or key."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from normfold.verify import InputError, open_dataset, read_labels
from normfold.verify.arrays import ArrayFile

RGB = [("x", ["batch", 3, 16, 16])]


def _png(path, shape=(16, 16, 3), seed=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    a = np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)
    Image.fromarray(a).save(path)
    return a


def _chw(a):
    """An 8-bit image array as the reader's C×H×W float32 in [0, 1], computed here."""
    x = a.astype(np.float32) / np.float32(255)
    return x[None] if x.ndim == 2 else x.transpose(2, 0, 1)


@pytest.mark.parametrize("kind", ["npy", "npz_stored", "npz_compressed"])
def test_array_file_reads_rows_in_any_order(tmp_path, kind):
    a = np.random.default_rng(1).standard_normal((37, 3, 4, 5)).astype(np.float32)
    if kind == "npy":
        np.save(tmp_path / "a.npy", a)
        f = ArrayFile(tmp_path / "a.npy")
    else:
        (np.savez if kind == "npz_stored" else np.savez_compressed)(tmp_path / "a.npz", other=a[:2], x=a)
        f = ArrayFile(tmp_path / "a.npz", "x")
    assert f.shape == a.shape and f.dtype == a.dtype
    for start, stop in [(0, 8), (8, 16), (30, 37), (3, 4), (0, 37)]:   # forward, back, whole
        np.testing.assert_array_equal(f.rows(start, stop), a[start:stop])
    f.close()


def test_directory_with_class_folders_and_batch_files(tmp_path):
    cat0 = _png(tmp_path / "cat" / "0.png", seed=1)
    grey = _png(tmp_path / "dog" / "g.png", shape=(16, 16), seed=2)
    batch = np.random.default_rng(3).random((2, 3, 16, 16)).astype(np.float32)
    np.save(tmp_path / "dog" / "b.npy", batch)
    (tmp_path / "README.txt").write_text("not a sample")
    data = open_dataset(tmp_path, RGB)
    assert data.names == ["cat/0.png", "dog/b.npy[0]", "dog/b.npy[1]", "dog/g.png"]
    kept, (x,), skipped = data.read([3, 0, 2])
    assert kept == [3, 0, 2] and not skipped
    # a grey image feeds a 3-channel input as PIL's RGB conversion (three equal planes)
    np.testing.assert_array_equal(x[0], _chw(np.stack([grey] * 3, axis=-1)))
    np.testing.assert_array_equal(x[1], _chw(cat0))
    np.testing.assert_array_equal(x[2], batch[1])


def test_glob_names_are_relative_to_its_fixed_folders(tmp_path):
    a = _png(tmp_path / "val" / "a" / "1.png", seed=1)
    _png(tmp_path / "val" / "b" / "2.png", seed=2)
    _png(tmp_path / "val" / "b" / "skip.jpeg", seed=3)
    data = open_dataset(str(tmp_path / "val" / "*" / "*.png"), RGB)
    assert data.names == ["a/1.png", "b/2.png"]
    np.testing.assert_array_equal(data.read([0])[1][0][0], _chw(a))


def test_resize_and_channel_conversion_match_pil(tmp_path):
    a = _png(tmp_path / "big.png", shape=(20, 24, 3), seed=4)
    data = open_dataset(tmp_path, [("x", ["batch", 1, 16, 16])], resize=(16, 16))
    expected = np.asarray(Image.fromarray(a).convert("L").resize((16, 16), Image.Resampling.BILINEAR))
    np.testing.assert_array_equal(data.read([0])[1][0][0], _chw(expected))


@pytest.mark.parametrize("compress", [False, True], ids=["stored", "compressed"])
def test_npz_keyed_by_input_names_feeds_each_input(tmp_path, compress):
    image = np.random.default_rng(5).random((6, 3, 16, 16)).astype(np.float32)
    mask = np.random.default_rng(6).random((6, 1, 16, 16))       # float64 on disk: read as float32
    (np.savez_compressed if compress else np.savez)(tmp_path / "d.npz", mask=mask, image=image)
    data = open_dataset(tmp_path / "d.npz", [("image", ["n", 3, 16, 16]), ("mask", ["n", 1, 16, 16])])
    assert data.names == [str(i) for i in range(6)]
    kept, (xi, xm), _ = data.read([4, 1])
    np.testing.assert_array_equal(xi, image[[4, 1]])
    np.testing.assert_array_equal(xm, mask[[4, 1]].astype(np.float32))


def test_npz_of_samples_and_batches_sorted_by_key(tmp_path):
    one, many = np.ones((3, 16, 16)), np.zeros((2, 3, 16, 16))
    np.savez(tmp_path / "d.npz", b=many, a=one)
    data = open_dataset(tmp_path / "d.npz", RGB)
    assert data.names == ["a", "b[0]", "b[1]"]
    np.testing.assert_array_equal(data.read(range(3))[1][0], np.concatenate([one[None], many]))


def test_folder_per_input(tmp_path):
    for name, channels in (("image", 3), ("mask", 1)):
        (tmp_path / name).mkdir()
        for i in range(3):
            np.save(tmp_path / name / f"{i}.npy", np.full((channels, 16, 16), i + 10 * channels, np.float32))
    data = open_dataset(tmp_path, [("image", ["n", 3, 16, 16]), ("mask", ["n", 1, 16, 16])])
    assert data.names == ["0.npy", "1.npy", "2.npy"]
    _, (xi, xm), _ = data.read([2])
    assert xi.shape == (1, 3, 16, 16) and float(xi.max()) == 32.0 and float(xm.max()) == 12.0


def _bad(tmp_path, case):
    """(spec, model inputs, extra open_dataset kwargs, text the error must hold)."""
    d = tmp_path / "in"
    d.mkdir()
    if case == "not_an_image":
        (d / "broken.png").write_bytes(b"not a png")
        return d, RGB, {}, "broken.png"
    if case == "mixed_sizes":
        _png(d / "a.png")
        _png(d / "b.png", shape=(20, 16, 3))
        return d, RGB, {}, "b.png has sample shape (3, 20, 16), a.png has (3, 16, 16) (give --resize H,W"
    if case == "model_size":
        _png(d / "a.png", shape=(32, 32, 3))
        return d, RGB, {}, "--resize 16,16 resizes the images"
    if case == "npz_key_not_an_input":
        np.savez(d / "d.npz", image=np.zeros((2, 3, 16, 16)), extra=np.zeros((2, 1, 16, 16)))
        return d / "d.npz", [("image", ["n", 3, 16, 16]), ("mask", ["n", 1, 16, 16])], {}, "key 'extra' is not an input"
    if case == "npz_input_missing":
        np.savez(d / "d.npz", image=np.zeros((2, 3, 16, 16)))
        return d / "d.npz", [("image", ["n", 3, 16, 16]), ("mask", ["n", 1, 16, 16])], {}, "no array for the model's input 'mask'"
    if case == "npz_lengths_differ":
        np.savez(d / "d.npz", image=np.zeros((2, 3, 16, 16)), mask=np.zeros((3, 1, 16, 16)))
        return d / "d.npz", [("image", ["n", 3, 16, 16]), ("mask", ["n", 1, 16, 16])], {}, "has 3 samples"
    if case == "zero_samples_dir":
        return d, RGB, {}, "holds no .png/.jpg/.npy files"
    if case == "zero_samples_npz":
        np.savez(d / "d.npz", x=np.zeros((0, 3, 16, 16)))
        return d / "d.npz", RGB, {}, "holds no samples"
    if case == "glob_no_match":
        return str(d / "*.png"), RGB, {}, "matches no .png/.jpg/.npy files"
    if case == "missing":
        return d / "nope", RGB, {}, "does not exist"
    if case == "mean_channels":
        _png(d / "a.png")
        return d, RGB, {"mean": (0.5, 0.5)}, "--mean has 2 values, the input has 3 channels"
    if case == "folder_per_input_missing":
        (d / "image").mkdir()
        return d, [("image", ["n", 3, 16, 16]), ("mask", ["n", 1, 16, 16])], {}, "no folder"
    if case == "folder_per_input_sample":
        for name in ("image", "mask"):
            (d / name).mkdir()
            np.save(d / name / "0.npy", np.zeros((3 if name == "image" else 1, 16, 16)))
        np.save(d / "image" / "1.npy", np.zeros((3, 16, 16)))
        return d, [("image", ["n", 3, 16, 16]), ("mask", ["n", 1, 16, 16])], {}, "sample '1.npy' is missing from"
    raise AssertionError(case)


@pytest.mark.parametrize("case", [
    "not_an_image", "mixed_sizes", "model_size", "npz_key_not_an_input", "npz_input_missing", "npz_lengths_differ",
    "zero_samples_dir", "zero_samples_npz", "glob_no_match", "missing", "mean_channels", "folder_per_input_missing",
    "folder_per_input_sample",
])
def test_bad_input_is_refused_at_open_naming_it(tmp_path, case):
    spec, inputs, kwargs, expect = _bad(tmp_path, case)
    with pytest.raises(InputError) as info:
        open_dataset(spec, inputs, **kwargs)
    assert expect in str(info.value) and "\n" not in str(info.value)


def test_truncated_image_fails_when_read_or_is_skipped(tmp_path):
    for i in range(3):
        _png(tmp_path / f"{i}.png", seed=i)
    whole = (tmp_path / "1.png").read_bytes()
    (tmp_path / "1.png").write_bytes(whole[: len(whole) // 2])     # the header still reads
    data = open_dataset(tmp_path, RGB)
    assert len(data) == 3
    with pytest.raises(InputError, match="1.png"):
        data.read([0, 1, 2])
    kept, (x,), skipped = data.read([0, 1, 2], skip_bad=True)
    assert kept == [0, 2] and x.shape[0] == 2
    assert [(s.index, s.name) for s in skipped] == [(1, "1.png")] and "truncated" in skipped[0].reason


NAMES = ["cat/a.png", "cat/b.png", "dog/c.png", "dog/b.npy[0]"]


@pytest.mark.parametrize("text, expected", [
    ("name,label\ncat/a.png,3\ncat/b.png,0\n\ndog/c.png,7\ndog/b.npy[0],1\n", [3, 0, 7, 1]),
    ("dog/b.npy[0], 1\ndog/c.png,7\ncat/b.png,0\ncat/a.png,3\n", [3, 0, 7, 1]),
], ids=["header", "any_order"])
def test_csv_labels_align_with_the_names(tmp_path, text, expected):
    (tmp_path / "l.csv").write_text(text)
    np.testing.assert_array_equal(read_labels(tmp_path / "l.csv", NAMES).values, expected)


@pytest.mark.parametrize("text, expect", [
    ("cat/a.png,3\ncat/b.png,0\ndog/c.png,7\ndog/b.npy[0],1\ndog/zzz.png,2\n", "line 5: sample 'dog/zzz.png' is not among the inputs"),
    ("cat/a.png,3\ncat/b.png,0\ndog/c.png,7\n", "no label for sample 'dog/b.npy[0]'"),
    ("cat/a.png,3\ncat/a.png,3\n", "line 2: sample 'cat/a.png' is labelled twice"),
    ("cat/a.png,cat\n", "line 1: label 'cat' is not a class index"),
    ("cat/a.png,3,extra\n", "line 1: expected name,label"),
    ("\n", "holds no labels"),
], ids=["unknown_sample", "unlabelled_sample", "twice", "not_integer", "fields", "empty"])
def test_bad_csv_labels_name_the_line_or_sample(tmp_path, text, expect):
    (tmp_path / "l.csv").write_text(text)
    with pytest.raises(InputError, match=expect.replace("[", r"\[").replace("]", r"\]")):
        read_labels(tmp_path / "l.csv", NAMES)


@pytest.mark.parametrize("folders, expected", [
    (["3", "0", "10"], [3, 0, 10]),                 # numbered folders are the class indices
    (["dog", "cat", "emu"], [1, 0, 2]),             # named folders: sorted names are classes 0, 1, 2
], ids=["numbered", "named"])
def test_folder_per_class_labels(tmp_path, folders, expected):
    for i, f in enumerate(folders):
        _png(tmp_path / f / f"{i}.png", seed=i)
    data = open_dataset(tmp_path, RGB)
    labels = read_labels(tmp_path, data.names)
    by_name = dict(zip(data.names, labels.values))
    assert [by_name[f"{f}/{i}.png"] for i, f in enumerate(folders)] == expected


def test_folder_labels_need_every_sample_in_a_class_folder(tmp_path):
    _png(tmp_path / "cat" / "a.png")
    _png(tmp_path / "loose.png")
    data = open_dataset(tmp_path, RGB)
    with pytest.raises(InputError, match="sample 'loose.png' is not in a class folder"):
        read_labels(tmp_path, data.names)


@pytest.mark.parametrize("value, std", [(np.nan, None), (np.inf, None), (1.0, (0.0,))],
                         ids=["nan", "inf", "zero_std_makes_inf"])
def test_a_sample_with_nan_or_inf_is_named_or_skipped(tmp_path, value, std):
    np.save(tmp_path / "a.npy", np.zeros((3, 16, 16), np.float32))
    bad = np.zeros((3, 16, 16), np.float32)
    bad[1, 2, 3] = value
    np.save(tmp_path / "b.npy", bad)
    if std is not None:     # normalize refuses a zero std before anything is read
        with pytest.raises(InputError, match="--std must not contain 0"):
            open_dataset(tmp_path, RGB, std=std)
        return
    data = open_dataset(tmp_path, RGB)
    with pytest.raises(InputError, match=r"sample 1 holds NaN or infinite values \(.*b\.npy at \(1, 2, 3\)\)"):
        data.read([0, 1])
    kept, _, skipped = data.read([0, 1], skip_bad=True)
    assert kept == [0] and [s.name for s in skipped] == ["b.npy"]
