"""The float graph quantize works on: the model folded (and the fold verified), with the file it came from.

A PyTorch model is folded and exported with its unfolded baseline
(normfold.export.export_with_baseline); an .onnx file (or ModelProto) is folded
by the ONNX-graph pass. Either way the folded file is verified against the
float64 oracle, as `normfold run` does, and the unfolded graph (the file as
shipped) is kept: latency compares with it, and the frozen statistics of its
norms are read from it (statistics.py).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import onnx

from .options import QuantizeError
from .qdq import quantize_problem


@dataclass
class FloatSource:
    """The folded fp32 graph and where it came from."""
    name: str
    proto: onnx.ModelProto                  # folded, as written to model.onnx
    unfolded: Path                          # the model as exported / as shipped, for latency
    folded: Path
    fold_report: Any
    verified: bool
    shape: tuple[int, ...]


def folded_source(model, example_input, input_shape, work: Path, log) -> FloatSource:
    """Fold (and verify against the float64 oracle) a torch model or an ONNX file, into ``work``."""
    import torch

    from normfold.export import ExportError, export_with_baseline, write_checked
    from normfold.fold import FoldError, fold_onnx
    from normfold.verify import OnnxOracle, verify
    from normfold.verify.signature import signature_of

    if isinstance(model, torch.nn.Module):
        if example_input is None:
            raise QuantizeError("a torch model needs example_input (a tensor of the input shape)")
        log("folding and exporting ...")
        try:
            folded, unfolded = export_with_baseline(model, example_input, work / "model.onnx",
                                                    work / "model.unfolded.onnx")
        except ExportError as exc:
            raise QuantizeError(str(exc)) from exc
        verified = verify(model, folded.path, example_input).ok
        return FloatSource(type(model).__name__, onnx.load(str(folded.path)), unfolded.path, folded.path,
                           folded.fold_report, verified, tuple(example_input.shape))
    path = None
    if isinstance(model, onnx.ModelProto):
        proto, name = model, "the ONNX model"
    else:
        path = Path(model)
        if not path.is_file():
            raise QuantizeError(f"{path} does not exist")
        try:
            proto = onnx.load(str(path))
        except Exception as exc:
            raise QuantizeError(f"{path} is not a readable ONNX file: {str(exc).splitlines()[0]}") from exc
        name = str(path)
    problem = quantize_problem(proto, name)
    if problem:
        raise QuantizeError(problem)
    sig = signature_of(proto, name)
    if len(sig.names) != 1:
        raise QuantizeError(f"{name} takes {len(sig.names)} inputs; quantize handles single-input models")
    declared = sig.shapes[0]
    shape = tuple(input_shape) if input_shape is not None else tuple(
        d if isinstance(d, int) and d > 0 else (1 if i == 0 else None) for i, d in enumerate(declared))
    if None in shape:
        raise QuantizeError(f"{name}: input {sig.names[0]!r} has shape {declared} with symbolic dims; give "
                            "input_shape (--input-shape N,C,H,W)")
    fixes = any(not (isinstance(d, int) and d > 0) for d in declared[1:])
    log("folding the ONNX graph ...")
    try:
        folded_proto, fold_report = fold_onnx(proto, input_shapes={sig.names[0]: list(shape)} if fixes else None)
    except FoldError as exc:
        raise QuantizeError(str(exc)) from exc
    if path is None:
        path = work / "model.unfolded.onnx"
        onnx.save(proto, path)
    try:
        folded = write_checked(folded_proto, work / "model.onnx", fold_report)
    except ExportError as exc:
        raise QuantizeError(str(exc)) from exc
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    verified = verify(OnnxOracle(proto, where=name), folded.path, x).ok
    return FloatSource(name, folded_proto, path, folded.path, fold_report, verified, shape)
