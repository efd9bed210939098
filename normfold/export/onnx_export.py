"""Export to ONNX: fold (optional) -> torch.onnx.export (dynamo) -> onnxsim -> onnx.checker.

Two front ends fold (normfold/fold): torch.fx on the module, before export, and
the ONNX-graph pass on the exported file. torch.fx comes first; where it cannot
trace the model's own forward (it raises FoldError, or reports ``""`` in
``FoldReport.untraced``: data-dependent Python such as Ultralytics' layer
loop), the model is exported unfolded with the dynamo exporter, which handles
such code, and that graph is folded by ``fold_onnx``. The report says which
front end ran and why (``front_end``, ``front_end_reason``).

With ``fold=False`` the model is exported as it is, norm layers kept: the
exporter's optimizer runs without its BatchNorm fusions (see optimize.py), and
onnxsim only folds constants and infers shapes: its optimizer stage would fuse
Conv->BatchNormalization, and (onnxsim >= 0.8) also Conv->Mul->Add, i.e. a
diagonal norm written as arithmetic, into the Conv. The file then keeps every
norm layer, and differs from the folded export in folding alone; the exporter's
other clean-ups apply to both. It is also exactly the graph the ONNX front end
folds.

``precision="fp16"`` exports a float16 model: the weights are promoted to
float64, folded there, and cast to float16 once (never folded in fp16
arithmetic, never rounded twice through fp32); a folded weight that does not
fit float16 (|w| > 65504) is refused, naming the parameter. The ONNX front end
folds float32 exports only (an fp16 graph's weights are already rounded once).

The file is written to a temporary name beside ``path`` and moved into place
only after it passes ``onnx.checker``: a failed export leaves nothing behind.
A model over protobuf's 2 GB limit is written with its weights in
``<name>.data`` beside it (``normfold.onnx_file.save``); ``ExportResult.files``
lists every file written.
"""
from __future__ import annotations

import collections
import copy
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import onnx
import torch
from torch import nn

from .._messages import first_line, plain, root_cause
from .._quiet import quiet
from ..atomic import same_file
from ..fold import FoldError, FoldReport, as_input_tuple, fold as fold_model, fold_onnx
from ..fold.algebra import cast
from ..fold.onnx.graph import NAME_SCOPES
from ..fold.torch.examples import check_example_inputs
from ..fold.torch.trace import UntraceableError, describe
from ..nn.bake import bake_weights
from ..onnx_file import OnnxFileError, save
from .optimize import optimize as optimize_graph
from .torchscript import torchscript_export


class ExportError(RuntimeError):
    """torch.onnx.export, onnxsim or onnx.checker rejected the model."""


@dataclass
class ExportResult:
    path: Path
    fold_report: FoldReport | None
    op_counts: dict[str, int] = field(default_factory=dict)
    files: list[Path] = field(default_factory=list)   # every file written: ``path``, and its external data if any


def op_counts(model: onnx.ModelProto) -> dict[str, int]:
    """ONNX op type -> number of nodes in the main graph, most frequent first."""
    return dict(collections.Counter(n.op_type for n in model.graph.node).most_common())


def export(
    model: nn.Module,
    example_inputs: Any,
    path: str | os.PathLike,
    *,
    fold: bool = True,
    opset: int = 18,
    dynamic_batch: bool = True,
    simplify: bool = True,
    precision: str = "fp32",
) -> ExportResult:
    """Export ``model`` (folded unless ``fold=False``) to ``path``; the caller's model is untouched.

    ``precision`` is "fp32" or "fp16" (the weights and the graph's inputs and outputs).
    """
    path = _output_path(path)
    job = _Job.of(model, example_inputs, precision, opset, dynamic_batch, simplify)
    proto, report = job.folded() if fold else (job.unfolded(), None)
    return write_checked(proto, path, report)


def export_with_baseline(
    model: nn.Module,
    example_inputs: Any,
    path: str | os.PathLike,
    baseline_path: str | os.PathLike,
    *,
    opset: int = 18,
    dynamic_batch: bool = True,
    simplify: bool = True,
    precision: str = "fp32",
) -> tuple[ExportResult, ExportResult]:
    """``export(fold=True)`` to ``path`` and ``export(fold=False)`` to ``baseline_path``: (folded, unfolded).

    Where the ONNX front end folds, the folded file is the fold of the baseline
    graph, exported once.
    """
    path, baseline_path = _output_path(path), _output_path(baseline_path)
    if same_file(path, baseline_path):
        raise ExportError(f"export path {path} is also the baseline's path")
    job = _Job.of(model, example_inputs, precision, opset, dynamic_batch, simplify)
    baseline = job.unfolded()
    proto, report = job.folded(baseline)
    return write_checked(proto, path, report), write_checked(baseline, baseline_path, None)


def unfolded_graph(model: nn.Module, example_inputs: Any, *, opset: int = 18, dynamic_batch: bool = True,
                   simplify: bool = True, precision: str = "fp32") -> onnx.ModelProto:
    """The graph ``export(fold=False)`` writes, in memory: what the ONNX front end folds."""
    return _Job.of(model, example_inputs, precision, opset, dynamic_batch, simplify).unfolded()


@dataclass
class _Job:
    """One model to export: its unfolded graph, and its folded graph by whichever front end can fold it."""
    model: nn.Module
    inputs: tuple
    dtype: torch.dtype
    opset: int
    dynamic_batch: bool
    simplify: bool

    @classmethod
    def of(cls, model: nn.Module, example_inputs: Any, precision: str, opset: int, dynamic_batch: bool,
           simplify: bool) -> _Job:
        """The job for export's arguments: the example inputs checked, the precision's dtype."""
        return cls(model, _inputs(example_inputs, model), precision_dtype(precision), opset, dynamic_batch, simplify)

    def unfolded(self) -> onnx.ModelProto:
        work, _ = prepare(self.model, self.inputs, fold=False, dtype=self.dtype)
        return self._convert(work, keep_norms=True)

    def folded(self, baseline: onnx.ModelProto | None = None) -> tuple[onnx.ModelProto, FoldReport]:
        try:
            (work, report), why, untraced = torch_fx(
                self.model, lambda: prepare(self.model, self.inputs, fold=True, dtype=self.dtype))
        except FoldError as exc:  # not a trace failure: the ONNX front end would meet it too
            raise ExportError(str(exc)) from exc
        if why is None:
            try:
                return self._convert(work, keep_norms=False), report
            except ExportError as exc:   # the fx GraphModule, not the model: the ONNX front end takes over
                why = f"the module torch.fx folded could not be exported ({exc})"
        if self.dtype != torch.float32:
            raise ExportError(f"cannot export at {str(self.dtype).removeprefix('torch.')}: {why}; the ONNX-graph "
                              "fold that takes over folds float32 exports only")
        if baseline is None:
            try:
                baseline = self.unfolded()
            except ExportError as exc:
                raise ExportError(f"{why}; exporting it unfolded for the ONNX-graph fold failed too: {exc}") from exc
        return fold_graph(baseline, why, untraced)

    def _convert(self, work: nn.Module, *, keep_norms: bool) -> onnx.ModelProto:
        inputs = tuple(t.to(self.dtype) if t.is_floating_point() else t for t in self.inputs)
        proto = _torch_export(work, inputs, opset=self.opset, dynamic_batch=self.dynamic_batch, keep_norms=keep_norms)
        return _simplify(proto, keep_norms=keep_norms) if self.simplify else proto


def torch_fx(model: nn.Module, attempt: Callable[[], tuple[Any, FoldReport | None]]):
    """Run ``attempt`` (a torch.fx fold of ``model`` returning (result, report)) and say whether it folded the model.

    Returns ``((result, report), None, report.untraced)``, or, where torch.fx
    could not trace the model's own forward (UntraceableError, or ``""`` in
    ``report.untraced``), ``((None, None), why, untraced)``: the ONNX front end's turn.
    Any other FoldError (the model fails on its example inputs, say) is the caller's.
    """
    prefix = f"torch.fx could not trace {type(model).__name__}.forward: "
    try:
        result, report = attempt()
    except UntraceableError as exc:
        return (None, None), str(exc), {"": exc.call}
    untraced = dict(report.untraced) if report is not None else {}
    if "" not in untraced:
        return (result, report), None, untraced
    return (None, None), prefix + untraced[""], untraced


def fold_graph(unfolded: onnx.ModelProto, why: str, untraced: dict[str, str] | None = None, *,
               densify: bool = False) -> tuple[onnx.ModelProto, FoldReport]:
    """The ONNX front end: fold the exported graph; the report says why torch.fx did not
    (``front_end_reason``) and what it could not trace (``untraced``)."""
    try:
        proto, report = fold_onnx(unfolded, densify=densify)
    except FoldError as exc:
        raise ExportError(f"{why}; the ONNX-graph fold failed too: {exc}") from exc
    report.front_end_reason = why
    report.untraced.update(untraced or {})
    return proto, report


def _inputs(example_inputs: Any, model: nn.Module) -> tuple:
    """The example inputs as a tuple, checked as the fold checks them (ExportError naming the problem)."""
    inputs = as_input_tuple(example_inputs)
    try:
        check_example_inputs(model, inputs)
    except FoldError as exc:
        raise ExportError(str(exc)) from None
    return inputs


def _output_path(path: str | os.PathLike) -> Path:
    path = Path(path)
    if path.is_dir():
        raise ExportError(f"export path {path} is a directory; give a file name ending in .onnx")
    if not path.parent.is_dir():
        raise ExportError(f"export path {path}: directory {path.parent} does not exist")
    return path


def write_checked(proto: onnx.ModelProto, path: str | os.PathLike, report: FoldReport | None = None) -> ExportResult:
    """Write ``proto`` to ``path`` atomically once it passes ``onnx.checker`` (full check), or ExportError;
    over 2 GB, with its external data beside it (see the module docstring)."""
    path = _output_path(path)
    try:
        files = save(proto, path, check=_checked)
    except OnnxFileError as exc:
        raise ExportError(str(exc)) from exc
    return ExportResult(path=path, fold_report=report, op_counts=op_counts(proto), files=files)


def _checked(proto: onnx.ModelProto) -> None:
    try:
        onnx.checker.check_model(proto, full_check=True)
    except Exception as exc:
        raise ExportError(f"onnx.checker rejected the exported model: {first_line(str(exc))}") from exc


PRECISIONS = {"fp32": torch.float32, "fp16": torch.float16}


def precision_dtype(precision: str) -> torch.dtype:
    try:
        return PRECISIONS[precision]
    except KeyError:
        raise ExportError(f"unknown precision {precision!r}; choose from {', '.join(PRECISIONS)}") from None


def prepare(model: nn.Module, inputs: tuple, *, fold: bool, dtype: torch.dtype) -> tuple[nn.Module, FoldReport | None]:
    """The module that gets exported: a copy, folded (unless ``fold=False``), at ``dtype``.

    fp32 keeps the fold pass's own rule (algebra in float64, cast once to the
    producer's dtype). Other dtypes promote the copy to float64, fold there and
    cast once to ``dtype``, so a weight is rounded to float16 exactly once.
    """
    if dtype == torch.float32:
        if not fold:
            return bake_weights(copy.deepcopy(model).eval()), None
        result = fold_model(model, inputs)
        return result.model, result.report
    wide = bake_weights(copy.deepcopy(model).eval()).double()
    report = None
    if fold:
        result = fold_model(wide, tuple(t.double() if t.is_floating_point() else t for t in inputs))
        wide, report = result.model, result.report
    for name, tensor in [*wide.named_parameters(), *wide.named_buffers()]:
        if tensor.is_floating_point():
            _, reason = cast(tensor.detach(), dtype, what=name)
            if reason is not None:
                raise ExportError(f"cannot export at {dtype}: {reason}".replace("torch.", ""))
    return wide.to(dtype), report


def _torch_export(model: nn.Module, inputs: tuple, *, opset: int, dynamic_batch: bool, keep_norms: bool) -> onnx.ModelProto:
    dynamic_shapes = None
    example = inputs
    if dynamic_batch:
        # torch.export specializes a dimension whose example size is 1; trace with batch 2.
        inputs = tuple(t.expand(2, *t.shape[1:]).contiguous() if t.shape[0] == 1 else t for t in inputs)
        batch = torch.export.Dim("batch")
        dynamic_shapes = tuple({0: batch} for _ in inputs)
    try:
        with quiet():
            program = torch.onnx.export(
                model,
                inputs,
                dynamo=True,
                opset_version=opset,
                dynamic_shapes=dynamic_shapes,
                optimize=False,
                verbose=False,
            )
            optimize_graph(program.model, keep_norms=keep_norms)
    except Exception as exc:
        failure = f"torch.onnx.export failed for {type(model).__name__}: {plain(describe(root_cause(exc)))}"
        try:   # the TorchScript exporter records one call, data-dependent shapes and all (torchscript.py)
            return torchscript_export(model, example, opset=opset, dynamo_failure=failure)
        except Exception as second:
            raise ExportError(str(second)) from exc
    return program.model_proto


def _simplify(proto: onnx.ModelProto, *, keep_norms: bool) -> onnx.ModelProto:
    import onnxsim

    try:
        with quiet():
            simplified, ok = onnxsim.simplify(proto, perform_optimization=not keep_norms)
    except Exception as exc:
        raise ExportError(f"onnxsim failed: {type(exc).__name__}: {first_line(str(exc))}") from exc
    if not ok:
        raise ExportError("onnxsim could not validate the simplified model")
    _keep_module_paths(proto, simplified)
    return simplified


def _keep_module_paths(exported: onnx.ModelProto, simplified: onnx.ModelProto) -> None:
    """onnxsim drops each node's metadata, where the dynamo exporter records the module the node
    came from: give that record back to the nodes it kept (by name), so that the ONNX front end's
    report can name a norm by its module path."""
    scopes = {n.name: p.value for n in exported.graph.node if n.name for p in n.metadata_props if p.key == NAME_SCOPES}
    for node in simplified.graph.node:
        if node.name in scopes and not any(p.key == NAME_SCOPES for p in node.metadata_props):
            node.metadata_props.add(key=NAME_SCOPES, value=scopes[node.name])
