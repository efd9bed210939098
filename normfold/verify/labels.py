"""Ground-truth labels for a dataset: a CSV file ``name,label`` or a folder-per-class layout.

* CSV: one ``name,label`` row per sample (an optional header row
  ``name,label``); ``name`` is the sample's name in the dataset (its path
  relative to the --inputs folder, ``file.npy[i]`` for a row of a batch file,
  the row number for an .npz of input arrays); ``label`` a class index >= 0,
  or with ``text=True`` any non-empty string (a transcription, boxes: what a
  metric function of ``normfold quantize --metric`` reads).
* a folder, the --inputs folder itself laid out as ``DIR/<class>/.../<file>``:
  the sample named ``<class>/.../<file>`` has class ``<class>``. When every
  class folder is a number (``0``, ``1``, ...) that number is the class index;
  otherwise the folders sorted by name are classes 0, 1, ... (torchvision's
  ImageFolder convention).

Every sample needs exactly one label and every label a sample: a label for a
sample that is not there, a sample without one, a name given twice, a label
that is not a non-negative integer is an InputError naming it.
"""
from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from .inputs import InputError


@dataclass(frozen=True)
class Labels:
    values: np.ndarray             # (N,) int64 (object: str with text=True), aligned with the dataset's names
    source: str
    classes: dict[str, int] | None = None   # folder name -> class index, for a folder layout

    def to_dict(self) -> dict:
        return {"source": self.source, "classes": self.classes}


def read_labels(path: str | Path, names: Sequence[str], flag: str = "--labels", *, text: bool = False) -> Labels:
    """The labels of the samples ``names``; ``text``: a CSV's labels are kept as strings (a folder
    layout still gives class indices)."""
    path = Path(path)
    if path.is_dir():
        found, classes = _folders(path, names, flag)
    elif path.is_file():
        found, classes = _csv(path, flag, text), None
    else:
        raise InputError(f"{flag} {path} does not exist")
    index = {n: i for i, n in enumerate(names)}
    values = np.full(len(names), -1, dtype=np.int64) if classes is not None or not text else \
        np.full(len(names), None, dtype=object)
    for name, (label, where) in found.items():
        if name not in index:
            raise InputError(f"{where}: sample {name!r} is not among the inputs")
        values[index[name]] = label
    missing = np.flatnonzero(np.equal(values, None) if values.dtype == object else values < 0)
    if missing.size:
        raise InputError(f"{flag} {path} has no label for sample {names[missing[0]]!r}"
                         + (f" (and {missing.size - 1} more)" if missing.size > 1 else ""))
    return Labels(values, str(path), classes)


def _csv(path: Path, flag: str, text: bool = False) -> dict[str, tuple[int | str, str]]:
    found: dict[str, tuple[int | str, str]] = {}
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.reader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InputError(f"{flag} {path} cannot be read: {exc}") from exc
    for line, row in enumerate(rows, 1):
        if not row or all(not c.strip() for c in row):
            continue
        where = f"{path} line {line}"
        if line == 1 and [c.strip().lower() for c in row] == ["name", "label"]:
            continue
        if len(row) != 2:
            raise InputError(f"{where}: expected name,label, got {len(row)} fields")
        name, value = row[0].strip(), row[1].strip()
        label = value if text else class_index(value)
        if label == "" or label == -1:
            what = "an empty label" if text else f"label {value!r} is not a class index (an integer >= 0)"
            raise InputError(f"{where}: {what}")
        if name in found:
            raise InputError(f"{where}: sample {name!r} is labelled twice ({found[name][1]})")
        found[name] = (label, where)
    if not found:
        raise InputError(f"{flag} {path} holds no labels")
    return found


def class_index(text: str) -> int:
    """``text`` as a class index, or -1 when it is not an integer >= 0."""
    try:
        return max(int(text), -1)
    except ValueError:
        return -1


def _folders(root: Path, names: Sequence[str], flag: str) -> tuple[dict[str, tuple[int, str]], dict[str, int]]:
    """Labels from the first folder of each sample's name; the sample's file must be in ``root``."""
    where = f"{flag} {root}"
    for name in names:
        file = re.sub(r"\[\d+\]$", "", name)      # a row of a batch file: its file
        if "/" not in name:
            raise InputError(f"{where}: sample {name!r} is not in a class folder (expected {root}/<class>/<file>)")
        if not (root / file).is_file():
            raise InputError(f"{where}: sample {name!r} is not in {root} (give the --inputs folder)")
    folders = sorted({n.split("/", 1)[0] for n in names})
    classes = {f: int(f) for f in folders} if all(f.isdigit() for f in folders) else \
        {f: i for i, f in enumerate(folders)}
    return {n: (classes[n.split("/", 1)[0]], where) for n in names}, classes
