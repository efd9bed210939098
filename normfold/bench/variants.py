"""The files a benchmark compares: unfolded, folded, norm-free twin, and extra ONNX files.

* unfolded: ``export(fold=False)``, norm layers kept and the exporter's and
  onnxsim's own BN fusion off, so it is the real "before";
* folded: ``export(fold=True)``, what normfold ships;
* twin: the norm-free twin exported like the folded model, the lower bound;
* file: any ONNX file given by the caller, benchmarked as it is.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..atomic import staged
from ..export import export, export_with_baseline
from ..fold import FoldReport
from .twin import TwinReport, norm_free_twin

MODEL_VARIANTS = ("unfolded", "folded", "twin")
VARIANT_FILES = tuple(f"{v}.onnx" for v in MODEL_VARIANTS)   # what export_variants writes, in that order


@dataclass(frozen=True)
class Variant:
    name: str
    kind: str        # "unfolded", "folded", "twin" or "file"
    path: Path | None    # None once a temporary export is deleted

    def to_dict(self) -> dict:
        return {"name": self.name, "kind": self.kind, "path": None if self.path is None else str(self.path)}


def export_variants(model: nn.Module, example: torch.Tensor, directory: Path) -> tuple[list[Variant], FoldReport, TwinReport]:
    """Export the three model variants into ``directory`` (dynamic batch), all three or none.

    They are written into a hidden staging directory there and moved into
    ``directory`` together once all three exports succeeded (normfold.atomic.staged).
    """
    directory = Path(directory)
    files = list(VARIANT_FILES)
    with staged(directory) as stage:
        unfolded_path, folded_path, twin_path = map(stage.path, files)
        folded, _ = export_with_baseline(model, example, folded_path, unfolded_path)
        twin, twin_report = norm_free_twin(model)
        export(twin, example, twin_path, fold=True)
        paths = dict(zip(MODEL_VARIANTS, stage.commit(files)))
    variants = [Variant(v, v, paths[v]) for v in MODEL_VARIANTS]
    return variants, folded.fold_report, twin_report


def file_variants(paths: list[str | os.PathLike], taken: set[str] = frozenset()) -> list[Variant]:
    """One variant per existing ONNX file, named by its stem (made unique)."""
    out, names = [], set(taken)
    for p in paths:
        path = Path(p)
        if not path.is_file():
            raise FileNotFoundError(f"ONNX file {path} does not exist")
        name, k = path.stem, 2
        while name in names:
            name, k = f"{path.stem}#{k}", k + 1
        names.add(name)
        out.append(Variant(name, "file", path))
    return out
