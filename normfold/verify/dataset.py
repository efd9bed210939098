"""A validation set on disk, read lazily: every sample named and sized up front, pixels read per batch.

``open_dataset(spec, inputs)`` takes ``--inputs`` and the model's inputs
(name, declared shape and, optionally, numpy dtype, from the ONNX file) and
returns a ``Dataset``; ``load_samples`` reads every sample of one in one batch:

* a directory: every .png/.jpg/.jpeg/.npy file below it (sub-folders too, so a
  folder-per-class layout works), sorted by relative path; for a model with
  several inputs, one sub-folder per input name, the same relative paths in each;
* a glob (``"val/**/*.png"``): the matching files, named relative to the
  pattern's fixed leading folders;
* an .npz file: for a model with several inputs, or when a key is one of the
  model's input names, one array per input (``(N, ...)``, the same N; samples
  are named by row, "0", "1", ...; any other key is an error; an input whose
  leading axis is not the batch, a weight fed as an input, takes its array
  whole, fed as it is with every batch); otherwise its
  arrays sorted by key, each a sample or a batch;
* a single .npy or image file.

An image becomes C×H×W float32 in [0, 1], converted to the model's channel
count where the input declares 1 or 3 channels (grey "L" or "RGB"), and
resized to ``resize`` (H, W) with bilinear filtering when asked. An .npy array
of the input's rank is a batch (rows named ``file.npy[i]``), of one axis less a
single sample. Arrays become float32; an integer or bool model input takes
integer (bool) arrays only, in its own dtype, without --mean/--std.

Opening reads headers only (image size and mode, .npy shape and dtype), so a
file that is not an image or an array, samples of different sizes, a shape the
model does not take, a channel count --mean/--std do not fit, zero samples are
refused here, naming the file, before any sample is decoded. A file whose
header is fine but whose data is not (a truncated JPEG, NaN or infinite
values) fails when its batch is read; ``read(..., skip_bad=True)`` then leaves
it out and says why.
"""
from __future__ import annotations

import glob
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from .._messages import error_line
from .arrays import ArrayError, ArrayFile, npz_members
from .inputs import InputError, normalize
from .session import shape_mismatch
from .signature import batched

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
ARRAY_SUFFIXES = (".npy",)
_GREY_MODES = ("L", "I", "I;16", "1", "LA")
_NPY_MAGIC = b"\x93NUMPY"


@dataclass(frozen=True)
class ImageRef:
    path: Path
    mode: str                      # "L" or "RGB": what the image is converted to
    size: tuple[int, int]          # (H, W) of the sample: the header's, or the --resize target
    resize: bool = False

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return (1 if self.mode == "L" else 3, *self.size)

    def load(self) -> np.ndarray:
        from PIL import Image

        with Image.open(self.path) as img:
            img = img.convert(self.mode)
            if self.resize and img.size != (self.size[1], self.size[0]):
                img = img.resize((self.size[1], self.size[0]), Image.Resampling.BILINEAR)
            arr = np.asarray(img, dtype=np.float32) / np.float32(255)
        return arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)

    @property
    def where(self) -> str:
        return str(self.path)


@dataclass(frozen=True)
class RowRef:
    array: ArrayFile
    row: int | None                # None: the whole array is one sample

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return tuple(self.array.shape[1:] if self.row is not None else self.array.shape)

    def load(self) -> np.ndarray:
        if self.row is None:
            return self.array.whole()
        return self.array.rows(self.row, self.row + 1)[0]

    @property
    def where(self) -> str:
        return self.array.where if self.row is None else f"{self.array.where} row {self.row}"


@dataclass
class Column:
    """The samples of one model input, in dataset order."""
    input: str
    refs: list
    sample_shape: tuple[int, ...]
    dtype: np.dtype = np.dtype(np.float32)     # the model input's: float32, or an integer/bool dtype
    constant: bool = False                     # one array (refs[0]) fed whole with every batch: no batch axis


@dataclass
class Skipped:
    index: int
    name: str
    reason: str


@dataclass
class Dataset:
    names: list[str]                       # one per sample, unique
    columns: list[Column]                  # one per model input, in the model's order
    source: dict                           # what --inputs was, for the report
    files: list[Path] = field(default_factory=list)
    mean: Sequence[float] | None = None
    std: Sequence[float] | None = None
    flag: str = "--inputs"                 # how errors name the source

    def __len__(self) -> int:
        return len(self.names)

    @property
    def sample_bytes(self) -> int:
        """float32 bytes of one sample over all inputs."""
        return 4 * sum(int(np.prod(c.sample_shape)) for c in self.columns)

    def read(self, indices: Sequence[int], skip_bad: bool = False) -> tuple[list[int], tuple[np.ndarray, ...], list[Skipped]]:
        """(the indices read, one float32 batch per input, the samples left out).

        A sample that cannot be read raises InputError naming its file, or with
        ``skip_bad`` is left out and listed.
        """
        kept, rows, skipped = [], [], []
        for i in indices:
            try:
                sample = [None if c.constant else self._sample(c, i) for c in self.columns]
            except InputError as exc:
                if not skip_bad:
                    raise
                skipped.append(Skipped(int(i), self.names[i], str(exc)))
                continue
            kept.append(int(i))
            rows.append(sample)
        batch = tuple(self._sample(c, 0) if c.constant else
                      np.stack([r[k] for r in rows]) if rows else np.zeros((0, *c.sample_shape), c.dtype)
                      for k, c in enumerate(self.columns))
        return kept, batch, skipped

    def close(self) -> None:
        for c in self.columns:
            for ref in c.refs:
                if isinstance(ref, RowRef):
                    ref.array.close()

    def _sample(self, column: Column, i: int) -> np.ndarray:
        """Sample ``i`` of one input: read, checked against its header, normalized, finite."""
        ref = column.refs[i]
        try:
            x = ref.load()
        except ArrayError as exc:
            raise InputError(str(exc)) from exc
        except Exception as exc:
            raise InputError(f"cannot read {ref.where}: {type(exc).__name__}: {error_line(exc)}") from exc
        if x.shape != column.sample_shape:
            raise InputError(f"{ref.where} decodes to shape {x.shape}, its header said {column.sample_shape}")
        if column.dtype.kind != "f" or column.constant:
            return x.astype(column.dtype, copy=False)
        x = normalize(x.astype(np.float32, copy=False)[None], self.mean, self.std)[0]
        bad = np.argwhere(~np.isfinite(x))
        if len(bad):
            after = ", after --mean/--std" if self.mean or self.std else ""
            raise InputError(f"{self.flag} {self.source['path']}: sample {i} holds NaN or infinite values "
                             f"({ref.where} at {tuple(int(j) for j in bad[0])}{after}): there is nothing to compare")
        return x


def load_samples(path: str | os.PathLike, rank: int) -> np.ndarray:
    """All samples under ``path`` as one float32 batch of ``rank`` axes, for a one-input model (for a
    validation set, stream it with ``Dataset.read`` instead).

    An array with ``rank - 1`` axes is one sample, one with ``rank`` axes a batch.
    """
    return load_all(path, [("", ["batch"] + ["?"] * (rank - 1))])[0]


def load_all(spec: str | os.PathLike, inputs: Sequence[tuple], flag: str = "--inputs") -> tuple[np.ndarray, ...]:
    """Every sample of ``open_dataset(spec, inputs)`` in one batch per input."""
    data = open_dataset(spec, inputs, flag=flag)
    try:
        return data.read(range(len(data)))[1]
    finally:
        data.close()


def open_dataset(spec: str | os.PathLike, inputs: Sequence[tuple], *,
                 resize: tuple[int, int] | None = None, mean=None, std=None, flag: str = "--inputs") -> Dataset:
    """The dataset ``spec`` for a model whose inputs are ``[(name, declared shape[, numpy dtype]), ...]`` (float32
    when the dtype is not given); see the module docstring."""
    text = str(spec)
    path = Path(text)
    dtypes = [np.dtype(i[2]) if len(i) > 2 else np.dtype(np.float32) for i in inputs]
    inputs = [(i[0], i[1]) for i in inputs]
    names = [n for n, _ in inputs]
    if path.is_file() and path.suffix.lower() == ".npz":
        data = _npz(path, inputs, flag)
    elif path.is_dir():
        data = _directory(path, inputs, resize, flag)
    elif path.is_file():
        if path.suffix.lower() not in IMAGE_SUFFIXES + ARRAY_SUFFIXES:
            raise InputError(not_data(path, flag))
        if len(inputs) != 1:
            raise InputError(f"{flag} {path}: one file feeds one input; the model takes {len(inputs)} "
                             f"({', '.join(names)}): give an .npz or a folder per input")
        data = _files([path], path.parent, inputs[0], resize, {"kind": "files", "path": text})
    elif glob.has_magic(text):
        matches = sorted(Path(p) for p in glob.glob(text, recursive=True) if Path(p).is_file())
        usable = [p for p in matches if p.suffix.lower() in IMAGE_SUFFIXES + ARRAY_SUFFIXES]
        if not usable:
            raise InputError(f"{flag} {text} matches no .png/.jpg/.npy files")
        if len(inputs) != 1:
            raise InputError(f"{flag} {text}: a glob feeds one input; the model takes {len(inputs)} "
                             f"({', '.join(names)}): give an .npz or a folder per input")
        data = _files(usable, _fixed_root(text), inputs[0], resize, {"kind": "files", "path": text})
    else:
        raise InputError(f"{flag} {path} does not exist")
    data.mean, data.std, data.flag = mean, std, flag
    for column, (name, declared), dtype in zip(data.columns, inputs, dtypes):
        _fits(column, name, declared, flag, resize)
        _takes(column, dtype)
        if dtype.kind == "f":
            normalize(np.zeros((1, *column.sample_shape), np.float32), mean, std)   # --mean/--std channel count
    if not data.names:
        raise InputError(f"{flag} {text} holds no samples")
    data.source.update(samples=len(data.names))
    return data


def _directory(path: Path, inputs, resize, flag) -> Dataset:
    if len(inputs) == 1:
        files = _usable_files(path)
        if not files:
            raise InputError(f"{flag} {path} holds no .png/.jpg/.npy files")
        return _files(files, path, inputs[0], resize, {"kind": "files", "path": str(path)})
    columns, names, all_files = [], None, []
    for name, declared in inputs:
        sub = path / name
        if not sub.is_dir():
            raise InputError(f"{flag} {path}: the model takes inputs {', '.join(n for n, _ in inputs)}; "
                             f"there is no folder {sub} (one folder per input)")
        files = _usable_files(sub)
        part = _files(files, sub, (name, declared), resize, {})
        if names is not None and part.names != names:
            missing = sorted(set(names) ^ set(part.names))[0]
            where = sub if missing not in part.names else path / inputs[0][0]
            raise InputError(f"{flag} {path}: sample {missing!r} is missing from {where}")
        names = part.names
        columns += part.columns
        all_files += part.files
    return Dataset(names or [], columns, {"kind": "files", "path": str(path)}, all_files)


def _usable_files(root: Path) -> list[Path]:
    return sorted((p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES + ARRAY_SUFFIXES
                   and not any(part.startswith(".") for part in p.relative_to(root).parts)),
                  key=lambda p: p.relative_to(root).as_posix())


def _fixed_root(pattern: str) -> Path:
    """The leading folders of a glob pattern that hold no wildcard."""
    parts = Path(pattern).parts
    fixed = [p for p in parts[:next((i for i, p in enumerate(parts) if glob.has_magic(p)), len(parts))]]
    return Path(*fixed) if fixed else Path(".")


def _files(files: list[Path], root: Path, model_input, resize, source: dict) -> Dataset:
    """One column from image and .npy files; names are paths relative to ``root``."""
    name, declared = model_input
    rank = len(declared)
    names, refs = [], []
    for p in files:
        label = p.relative_to(root).as_posix() if p.is_relative_to(root) else str(p)
        if p.suffix.lower() in IMAGE_SUFFIXES:
            names.append(label)
            refs.append(_image(p, declared, resize))
            continue
        _add_array(_array(p, None), label, rank, names, refs)
    return Dataset(names, [Column(name, refs, _common_shape(refs, names))], source, list(files))


def not_data(path: Path, flag: str | None = None) -> str:
    """The message for a file that is none of the formats a dataset reads (a text file, say)."""
    return f"{flag + ' ' if flag else ''}{path} is not an .npz/.npy/image file"


def _npz(path: Path, inputs, flag) -> Dataset:
    if not zipfile.is_zipfile(path):
        raise InputError(not_data(path, flag))
    keys = npz_members(path)
    if not keys:
        raise InputError(f"{flag} {path} holds no arrays")
    input_names = [n for n, _ in inputs]
    source = {"kind": "npz", "path": str(path)}
    if len(inputs) > 1 or set(keys) & set(input_names):
        for k in keys:
            if k not in input_names:
                raise InputError(f"{path}: key {k!r} is not an input of the model (its inputs: "
                                 f"{', '.join(input_names)})")
        columns, n = [], None
        for name, declared in inputs:
            if name not in keys:
                raise InputError(f"{path} has no array for the model's input {name!r} (keys: {', '.join(keys)})")
            array = _array(path, name)
            if array.ndim != len(declared):
                raise InputError(f"{array.where} has shape {array.shape}; input {name!r} has {len(declared)} "
                                 f"axes, so expected a batch of {len(declared)}")
            if not batched(declared, inputs[0][1]):
                columns.append(Column(name, [RowRef(array, None)], tuple(array.shape), constant=True))
                continue
            if n is not None and array.shape[0] != n:
                raise InputError(f"{array.where} has {array.shape[0]} samples, {path}[{inputs[0][0]}] has {n}")
            n = array.shape[0]
            columns.append(Column(name, [RowRef(array, i) for i in range(n)], tuple(array.shape[1:])))
        return Dataset([str(i) for i in range(n)], columns, source, [path])
    (name, declared), rank = inputs[0], len(inputs[0][1])
    names, refs = [], []
    for k in keys:
        _add_array(_array(path, k), k, rank, names, refs)
    return Dataset(names, [Column(name, refs, _common_shape(refs, names))], source, [path])


def _add_array(array: ArrayFile, label: str, rank: int, names: list, refs: list) -> None:
    """An array of the input's rank is a batch (rows named ``label[i]``), of one axis less one sample."""
    if array.ndim == rank:
        names += [f"{label}[{i}]" for i in range(array.shape[0])]
        refs += [RowRef(array, i) for i in range(array.shape[0])]
    elif array.ndim == rank - 1:
        names.append(label)
        refs.append(RowRef(array, None))
    else:
        raise InputError(f"{array.where} has shape {array.shape}; the model input has {rank} axes, so expected "
                         f"a sample of {rank - 1} axes or a batch of {rank}")


def _array(path: Path, member: str | None) -> ArrayFile:
    if member is None:
        with open(path, "rb") as f:   # np.load calls a file without the .npy magic "pickled data"
            if f.read(len(_NPY_MAGIC)) != _NPY_MAGIC:
                raise InputError(not_data(path))
    try:
        array = ArrayFile(path, member)
    except ArrayError as exc:
        raise InputError(str(exc)) from exc
    if not (np.issubdtype(array.dtype, np.number) or array.dtype == np.bool_):
        raise InputError(f"{array.where} has dtype {array.dtype}, not numbers")
    return array


def _image(p: Path, declared, resize) -> ImageRef:
    from PIL import Image

    try:
        with Image.open(p) as img:
            mode, (w, h) = img.mode, img.size
    except Exception as exc:
        raise InputError(f"cannot read {p}: {type(exc).__name__}: {error_line(exc)}") from exc
    channels = declared[1] if len(declared) > 1 and isinstance(declared[1], int) and declared[1] > 0 else None
    target = {1: "L", 3: "RGB"}.get(channels) or ("L" if mode in _GREY_MODES else "RGB")
    return ImageRef(p, target, tuple(resize) if resize else (h, w), resize is not None)


def _common_shape(refs, names) -> tuple[int, ...]:
    """Every sample's shape must be the first one's; name the first that differs."""
    shape = None
    for ref, name in zip(refs, names):
        s = ref.sample_shape
        if shape is None:
            shape, first = s, name
        elif s != shape:
            hint = " (give --resize H,W to resize images)" if isinstance(ref, ImageRef) and not ref.resize else ""
            raise InputError(f"{ref.where} has sample shape {s}, {first} has {shape}{hint}")
    return shape or ()


def _takes(column: Column, dtype: np.dtype) -> None:
    """An integer (bool) model input takes integer (bool) arrays only: its values are indices or shapes, so a
    float or an image is refused, naming the file; the column is read in the input's dtype."""
    column.dtype = dtype
    if dtype.kind == "f":
        return
    wanted = "b" if dtype == np.bool_ else "iu"
    for ref in column.refs:
        got = ref.array.dtype if isinstance(ref, RowRef) else np.dtype(np.float32)
        if got.kind not in wanted:
            what = "bool" if dtype == np.bool_ else "integer"
            source = ref.array.where if isinstance(ref, RowRef) else f"{ref.where} (an image)"
            raise InputError(f"{source} has dtype {got}; input {column.input!r} is {dtype}: give {what} values")


def _fits(column: Column, name: str, declared, flag: str, resize) -> None:
    if column.constant:
        problem = shape_mismatch(declared, column.sample_shape)
    else:
        problem = shape_mismatch(["batch", *declared[1:]] if declared else declared, (1, *column.sample_shape))
    if problem:
        images = any(isinstance(r, ImageRef) for r in column.refs[:1])
        hint = ""
        if images and resize is None and len(declared) == 4 and all(isinstance(d, int) and d > 0 for d in declared[2:]):
            hint = f"; --resize {declared[2]},{declared[3]} resizes the images"
        raise InputError(f"input {name!r} has shape {list(declared)}, the samples of {flag} have shape "
                         f"{list(column.sample_shape)} ({problem}){hint}")


