"""verify(): the original model in float64 is the oracle; everything else is measured against it.

The oracle (oracle.py) is either a PyTorch model or an ONNX graph (the original
.onnx file, evaluated in float64 by onnx.reference; where that cannot evaluate
it, the file on onnxruntime in float32, float32_graph.py, and the report's
``oracle`` and ``claim`` say so and what a pass is then worth). Runs, on the same inputs,
for each batch size:
  original_<dtype>  the original in the checked file's dtype (float32, or
                    float16 for an fp16 export): eager for a PyTorch model, the
                    original file on onnxruntime CPU for an ONNX oracle; its
                    error sets the tolerance
  folded_<dtype>    normfold.fold's model, eager (folded in float64, cast once);
                    PyTorch oracle only, where torch.fx traces the model's forward
  onnx_<provider>   the checked ONNX file on onnxruntime, one run per provider

The dtype and the batch axis come from the checked file's first input: a
dynamic batch axis is checked at batch sizes 1 and 3 unless ``batch_sizes``
says otherwise. Eager runs are on CPU; on CUDA the check is onnxruntime's, with
TF32 off there and in torch (``torch.backends.{cuda.matmul,cudnn}.allow_tf32``).

Bad input or environment (a missing or corrupt file, inputs that do not match
it, an unknown or unusable provider, a graph neither oracle can evaluate)
raises SessionError, InputError or OracleError; a failed check is a
report with ``ok == False``.
"""
from __future__ import annotations

import contextlib
import inspect
import os
import platform
from typing import Any, NamedTuple, Sequence

import numpy as np
import torch
from torch import nn

from ..export import prepare, torch_fx
from ..fold import FoldError, as_input_tuple
from .inputs import InputError, batch_of
from .localize import DEFAULT_BUDGET_BYTES, first_fold_site, first_onnx_node, first_shared_tensor
from .metrics import ErrorStats
from .oracle import OnnxOracle, Oracle, TorchOracle, as_oracle, cast_copy, run_eager
from .report import RunCheck, VerifyReport
from .selection import SelectedRows
from .session import SessionError, cuda_problem, open_session, provider_name, provider_options, run_session, shape_mismatch
from .signature import OnnxSignature, read_onnx
from .tolerance import Tolerance, minimum_passing

DYNAMIC_BATCH_SIZES = (1, 3)


def check_inputs(oracle: Oracle | nn.Module, sig: OnnxSignature, inputs: tuple[torch.Tensor, ...]) -> None:
    """The checked file and the oracle must take the same inputs; name the first mismatch."""
    oracle = as_oracle(oracle)
    if len(sig.names) != len(inputs):
        raise InputError(f"the ONNX model takes {len(sig.names)} inputs ({', '.join(sig.names)}), "
                         f"{len(inputs)} were given")
    if isinstance(oracle, TorchOracle):
        params = list(inspect.signature(oracle.model.forward).parameters.values())
        positional = [p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        if not any(p.kind == p.VAR_POSITIONAL for p in params) and positional[:len(sig.names)] != sig.names:
            raise InputError(f"the ONNX model's inputs are named {sig.names}, the model's forward takes "
                             f"{positional}: is this ONNX file exported from this model?")
    sigs = [("ONNX", sig)]
    if isinstance(oracle, OnnxOracle):
        original = oracle.signature
        if len(original.names) != len(sig.names):
            raise InputError(f"{oracle.where} takes {len(original.names)} inputs, the checked file "
                             f"{len(sig.names)}: is it derived from this original?")
        if original.dtype != sig.dtype:
            raise InputError(f"{oracle.where} is a {original.np_dtype.name} model, the checked file "
                             f"{sig.np_dtype.name}: the original's own {sig.np_dtype.name} error sets the tolerance, "
                             "so compare files of the same dtype")
        sigs.append((f"{oracle.where}:", original))
    for what, s in sigs:
        for name, declared, t in zip(s.names, s.shapes, inputs):
            problem = shape_mismatch(["batch", *declared[1:]] if declared else declared, t.shape)
            if problem:
                raise InputError(f"{what} input {name!r} has shape {declared}, the input has shape "
                                 f"{list(t.shape)} ({problem})")
    for name, t in zip(sig.names, inputs):
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            first = [int(i) for i in torch.nonzero(~torch.isfinite(t))[0]]
            raise InputError(f"input {name!r} holds NaN or infinite values (first at index {first}): "
                             "the check compares finite outputs")


def check_providers(providers: Sequence[str]) -> tuple[str, ...]:
    """The providers as a tuple, or SessionError before any work: an unknown name, CUDA unusable here."""
    providers = tuple(providers)
    for p in providers:
        provider_name(p)
    if "cuda" in providers:
        problem = cuda_problem()
        if problem:
            raise SessionError(f"--providers cuda: {problem}")
    return providers


def verify(
    model: nn.Module | str | os.PathLike | Any,
    onnx_path: str | os.PathLike,
    example_inputs: Any,
    providers: Sequence[str] = ("cpu",),
    *,
    atol: float | None = None,
    rtol: float | None = None,
    batch_sizes: Sequence[int] | None = None,
    localize: bool = True,
    budget_bytes: int = DEFAULT_BUDGET_BYTES,
    sig: OnnxSignature | None = None,
    folded: Folded | None = None,
) -> VerifyReport:
    """Compare ``onnx_path`` on onnxruntime (and the folded eager model) with ``model`` in float64.

    ``model``: the original, as the oracle: an ``nn.Module``, or an .onnx file
    (path or ModelProto) whose graph is evaluated in float64, or any Oracle.
    ``example_inputs``: one tensor or a tuple of tensors, batch axis first; a
    batch of b rows is taken from it with ``inputs.batch_of``. See tolerance.py
    for the rule, localize.py for what is named on failure. ``sig``: ``read_onnx(onnx_path)`` when the
    caller has read it already; ``folded``: ``folded_eager``'s result on these inputs when the caller
    has folded the model already (else both are made here).
    """
    inputs = as_input_tuple(example_inputs)
    providers = check_providers(providers)
    oracle = as_oracle(model)
    sig = read_onnx(onnx_path) if sig is None else sig
    check_inputs(oracle, sig, inputs)
    sizes = _batch_sizes(sig, batch_sizes, int(inputs[0].shape[0]) if inputs and inputs[0].dim() else 1)
    dtype, np_dtype, tol = sig.dtype, sig.np_dtype, Tolerance(atol=atol, rtol=rtol)
    short = "fp16" if dtype == torch.float16 else "fp32"

    with tf32_off():
        if folded is None:
            folded = folded_eager(oracle, inputs, dtype, short)
        folded, fold_report, note = folded
        sessions = {p: open_session(onnx_path, p) for p in providers}
        report = VerifyReport()
        if note:
            report.notes.append(note)
        failing_batch = None
        rows = SelectedRows(sig.proto)
        work = None if folded is None else cast_copy(folded, dtype)  # one copy for every batch size
        for b in sizes:
            xb = tuple(batch_of(t.detach().cpu().numpy(), b) if sig.batched(k) else t.detach().cpu().numpy()
                       for k, t in enumerate(inputs))
            truth = oracle.run(xb)
            names = [o.name for o in next(iter(sessions.values())).get_outputs()] if sessions else []
            if len(names) != len(truth):
                names = [f"output{i}" for i in range(len(truth))]
            ref = oracle.reference(xb, np_dtype)
            ref_errors = []
            for k, (name, o, r) in enumerate(zip(names, truth, ref)):
                r = rows.compared(k, name, o, r, f"original_{short}", b)
                stats = ErrorStats.of(o, r)
                ref_errors.append(stats.max_abs)
                report.checks.append(RunCheck(f"original_{short}", name, stats, None, True, b, stats.max_abs))
            runs = {} if work is None else {
                f"folded_{short}": run_eager(work, tuple(torch.from_numpy(t) for t in xb), dtype)}
            for p, session in sessions.items():
                runs[f"onnx_{p}"] = run_session(session, xb)
            for run, outs in runs.items():
                if len(outs) != len(truth):
                    raise SessionError(f"{run}: {len(outs)} outputs, the original has {len(truth)}")
                for k, (name, o, got, e_ref) in enumerate(zip(names, truth, outs, ref_errors)):
                    row = _row(run, name, o, rows.compared(k, name, o, got, run, b), e_ref, b, tol, np_dtype)
                    report.checks.append(row)
                    if not row.ok and failing_batch is None:
                        failing_batch = xb
        # after the runs: an ONNX oracle falls back to float32 on its first run where onnx.reference fails
        report.notes += rows.notes()
        report.rule = tol.describe(np_dtype, oracle.description)
        report.oracle, report.claim = getattr(oracle, "precision", "float64"), getattr(oracle, "claim", None)
        report.environment = _environment(sessions, dtype, sizes, oracle)
        if failing_batch is not None and localize:
            _localize(report, oracle, folded, fold_report, sig, failing_batch, dtype, budget_bytes)
    return report


class Folded(NamedTuple):
    """normfold.fold's eager model of a PyTorch oracle (None where there is none), its report, and a
    note saying why there is none."""
    model: nn.Module | None
    report: Any
    note: str | None


def folded_eager(oracle: Oracle, inputs, dtype, short: str) -> Folded:
    """The oracle's model folded, for a PyTorch oracle; the note says why there is none (torch.fx cannot
    trace the model's forward: the ONNX front end folds it, in the file only)."""
    if not isinstance(oracle, TorchOracle):
        return Folded(None, None, None)
    try:
        (folded, fold_report), why, _ = torch_fx(oracle.model,
                                                 lambda: prepare(oracle.model, inputs, fold=True, dtype=dtype))
    except FoldError as exc:
        return Folded(None, None, f"folded_{short}: not run, {exc}")
    return Folded(folded, fold_report, None if why is None else f"folded_{short}: not run, {why}")


def _row(run, name, oracle, got, e_ref, batch, tol: Tolerance, np_dtype) -> RunCheck:
    got = np.asarray(got, dtype=np.float64)
    if got.shape != oracle.shape:
        raise SessionError(f"{run}: output {name!r} has shape {list(got.shape)}, the original's has "
                           f"{list(oracle.shape)}")
    stats = ErrorStats.of(oracle, got)
    allowed = tol.allowed(e_ref, stats.scale, np_dtype)
    ok = bool(stats.max_abs <= allowed)
    least = None if ok else minimum_passing(stats.max_abs, e_ref, stats.scale, np_dtype)
    if least is not None and tol.explicit:
        least.pop("k")
    return RunCheck(run, name, stats, allowed, ok, batch, e_ref, least)


def _localize(report: VerifyReport, oracle: Oracle, folded, fold_report, sig: OnnxSignature, batch, dtype,
              budget) -> None:
    failed_runs = [c.run for c in report.failures()]
    onnx_runs = [r for r in dict.fromkeys(failed_runs) if r.startswith("onnx_")]
    provider = onnx_runs[0].removeprefix("onnx_") if onnx_runs else None
    if isinstance(oracle, OnnxOracle):
        if provider:
            node = first_shared_tensor(oracle, sig.proto, batch, sig.np_dtype, provider, budget)
            if node:
                report.localization.append(node)
            else:
                report.notes.append(f"localization: no tensor the two graphs share diverges on {provider}; the "
                                    "divergence is in tensors only the checked file has")
        return
    if not isinstance(oracle, TorchOracle):
        return
    inputs = tuple(torch.from_numpy(t) for t in batch)
    if any(r.startswith("folded_") for r in failed_runs):
        site = first_fold_site(oracle.model, folded, inputs, fold_report, dtype, budget)
        if site:
            report.localization.append(site)
        else:
            report.notes.append("localization: every fold site matches the oracle; the divergence is elsewhere "
                                "in the folded model")
    if provider:
        node = first_onnx_node(oracle.model, sig.proto, inputs, fold_report, dtype, provider, budget)
        if node:
            report.localization.append(node)
        else:
            report.notes.append(f"localization: no ONNX node with module-named weights diverges on {provider}; "
                                "the divergence is in a node without weights, or only at the outputs")


def _batch_sizes(sig: OnnxSignature, requested: Sequence[int] | None, example: int) -> tuple[int, ...]:
    """The batch sizes to check: 1 and 3 on a dynamic batch axis; else the declared batch, or the example's
    where the batch symbol is also on another input's inner axis (``OnnxSignature.dynamic_batch``)."""
    declared = sig.shapes[0][0] if sig.shapes[0] else None
    fixed = declared if isinstance(declared, int) and declared > 0 else example
    if requested is None:
        return DYNAMIC_BATCH_SIZES if sig.dynamic_batch else (fixed,)
    requested = tuple(int(b) for b in requested)
    if any(b < 1 for b in requested):
        raise InputError(f"batch sizes must be positive, got {list(requested)}")
    if not sig.dynamic_batch and any(b != fixed for b in requested):
        raise InputError(f"the ONNX model has a fixed batch size of {fixed} (declared, or carried by another "
                         f"input's inner axis); cannot check batch sizes {list(requested)}")
    return requested


@contextlib.contextmanager
def tf32_off():
    flags = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = flags


def _environment(sessions: dict, dtype: torch.dtype, sizes, oracle: Oracle) -> dict:
    import onnx
    import onnxruntime

    import normfold

    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "normfold": normfold.__version__,
        "torch": torch.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
        "numpy": np.__version__,
        "oracle": oracle.description,
        "dtype": str(dtype).removeprefix("torch."),
        "batch_sizes": list(sizes),
        "eager_device": "cpu" if isinstance(oracle, TorchOracle) else None,
        "torch_tf32": {"cuda.matmul.allow_tf32": False, "cudnn.allow_tf32": False},
        "providers": {p: provider_options(s) for p, s in sessions.items()},
    }
