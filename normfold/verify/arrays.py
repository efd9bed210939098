"""Arrays on disk read row by row: a .npy file, or one array of an .npz, never loaded whole.

``np.load`` of an .npz decompresses a whole array on every access, so a
validation set of 10,000 images stored in one .npz would be read into memory at
once. ``ArrayFile`` reads only the rows asked for:

* a standalone .npy file: memory-mapped (``np.load(mmap_mode="r")``);
* an .npz member stored without compression (``np.savez``): memory-mapped at
  its offset inside the zip file;
* a compressed member (``np.savez_compressed``): a decompressing stream that
  moves forward to the rows asked for (reading in order costs one pass; going
  back reopens the stream).

Only the .npy header is read when an ArrayFile is made, so shape and dtype are
known for every file before any sample is read.
"""
from __future__ import annotations

import struct
import zipfile
from pathlib import Path

import numpy as np

_LOCAL_HEADER = struct.Struct("<4s2B4HL2L2H")   # a zip entry's local file header (30 bytes)


class ArrayError(ValueError):
    """The file is not a readable .npy/.npz array; the message names it."""


class ArrayFile:
    """One array on disk: ``shape``, ``dtype``, and ``rows(start, stop)`` along its first axis."""

    def __init__(self, path: str | Path, member: str | None = None):
        self.path, self.member = Path(path), member
        self.where = str(self.path) if member is None else f"{self.path}[{member}]"
        self._zip = self._stream = None
        self._pos = 0
        try:
            if member is None:
                self._array = np.load(self.path, mmap_mode="r", allow_pickle=False)
                self.shape, self.dtype = self._array.shape, self._array.dtype
                return
            self._zip = zipfile.ZipFile(self.path)
            self._info = self._zip.getinfo(member + ".npy")
            with self._zip.open(self._info) as f:
                self.shape, self.dtype, self._header = _npy_header(f)
            self._array = self._mapped() if self._info.compress_type == zipfile.ZIP_STORED else None
        except ArrayError:
            raise
        except Exception as exc:
            raise ArrayError(f"cannot read {self.where}: {type(exc).__name__}: {exc}") from exc
        if self.dtype.hasobject:
            raise ArrayError(f"{self.where} holds Python objects, not numbers")

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def row_bytes(self) -> int:
        return int(np.prod(self.shape[1:], dtype=np.int64)) * self.dtype.itemsize

    def rows(self, start: int, stop: int) -> np.ndarray:
        """A copy of rows ``start:stop`` (the whole array when it is one sample: ``rows(0, 1)`` of a 0-d array)."""
        try:
            if self._array is not None:
                return np.array(self._array[start:stop] if self.shape else self._array)
            return self._streamed(start, stop)
        except Exception as exc:
            raise ArrayError(f"cannot read {self.where}: {type(exc).__name__}: {exc}") from exc

    def whole(self) -> np.ndarray:
        return self.rows(0, self.shape[0] if self.shape else 1)

    def close(self) -> None:
        if self._stream is not None:
            self._stream.close()
        if self._zip is not None:
            self._zip.close()
        self._array = self._stream = self._zip = None

    def _mapped(self) -> np.ndarray:
        """A memory map of a stored member: its data start after the local header, name, extra field, .npy header."""
        with open(self.path, "rb") as raw:
            raw.seek(self._info.header_offset)
            fields = _LOCAL_HEADER.unpack(raw.read(_LOCAL_HEADER.size))
        if fields[0] != b"PK\x03\x04":
            raise ArrayError(f"{self.where}: corrupt zip entry")
        start = self._info.header_offset + _LOCAL_HEADER.size + fields[-2] + fields[-1] + self._header
        return np.memmap(self.path, dtype=self.dtype, mode="r", offset=start, shape=self.shape)

    def _streamed(self, start: int, stop: int) -> np.ndarray:
        if self._stream is None or start < self._pos:
            if self._stream is not None:
                self._stream.close()
            self._stream = self._zip.open(self._info)
            self._stream.seek(self._header)
            self._pos = 0
        width = self.row_bytes
        if start > self._pos:
            self._stream.seek((start - self._pos) * width, 1)
        count = (stop - start) if self.shape else 1
        data = self._stream.read(count * width)
        if len(data) != count * width:
            raise ArrayError(f"{self.where} ends early: rows {start}..{stop} of {self.shape[0]} are missing")
        self._pos = stop
        return np.frombuffer(data, dtype=self.dtype).reshape((count, *self.shape[1:]) if self.shape else ()).copy()


def npz_members(path: str | Path) -> list[str]:
    """The array names of an .npz file (its ``*.npy`` entries), sorted."""
    try:
        with zipfile.ZipFile(path) as z:
            return sorted(n.removesuffix(".npy") for n in z.namelist() if n.endswith(".npy"))
    except Exception as exc:
        raise ArrayError(f"cannot read {path}: {type(exc).__name__}: {exc}") from exc


def _npy_header(f) -> tuple[tuple[int, ...], np.dtype, int]:
    """(shape, dtype, header length) of the .npy stream ``f``; Fortran order is refused."""
    version = np.lib.format.read_magic(f)
    if version == (1, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
    elif version == (2, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
    else:
        raise ArrayError(f".npy format version {version[0]}.{version[1]} is not supported (1.0 and 2.0 are)")
    if fortran:
        raise ArrayError("Fortran-ordered arrays are not supported (save with np.ascontiguousarray)")
    return tuple(shape), np.dtype(dtype), f.tell()
