"""verify(): the original model in float64 is the oracle; everything else is measured against it.

Runs, on the same inputs, for each batch size:
  original_<dtype>  the original model, eager, in the ONNX file's dtype (float32,
                    or float16 for an fp16 export): its error sets the tolerance
  folded_<dtype>    normfold.fold's model, eager (folded in float64, cast once)
  onnx_<provider>   the ONNX file on onnxruntime, one run per provider

The dtype and the batch axis come from the ONNX file's first input: a dynamic
batch axis is checked at batch sizes 1 and 3 unless ``batch_sizes`` says
otherwise. Eager runs are on CPU; on CUDA the check is onnxruntime's, with TF32
off there and in torch (``torch.backends.{cuda.matmul,cudnn}.allow_tf32``).

Bad input or environment (a missing or corrupt file, inputs that do not match
it, an unknown or unusable provider) raises SessionError or InputError; a failed
check is a report with ``ok == False``.
"""
from __future__ import annotations

import contextlib
import inspect
import os
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn
from torch.utils._pytree import tree_leaves

from ..export import prepare
from ..fold import FoldError, as_input_tuple
from .inputs import InputError, batch_of
from .localize import DEFAULT_BUDGET_BYTES, first_fold_site, first_onnx_node
from .metrics import ErrorStats
from .report import RunCheck, VerifyReport
from .session import SessionError, cuda_problem, open_session, provider_name, provider_options, run_session, shape_mismatch
from .tolerance import Tolerance, minimum_passing

DYNAMIC_BATCH_SIZES = (1, 3)
_DTYPES = {1: torch.float32, 10: torch.float16}   # onnx.TensorProto.FLOAT, FLOAT16


@dataclass(frozen=True)
class OnnxSignature:
    """What the ONNX file expects: input names, declared shapes (int or symbolic), dtype."""
    names: list[str]
    shapes: list[list]
    dtype: torch.dtype
    proto: Any

    @property
    def dynamic_batch(self) -> bool:
        return bool(self.shapes and self.shapes[0]) and not (isinstance(self.shapes[0][0], int) and self.shapes[0][0] > 0)


def read_onnx(path: str | os.PathLike) -> OnnxSignature:
    """Load ``path`` and describe its inputs, or SessionError naming the file."""
    import onnx

    path = Path(path)
    if not path.is_file():
        raise SessionError(f"ONNX file {path} does not exist")
    try:
        proto = onnx.load(str(path))
        onnx.checker.check_model(proto)
    except Exception as exc:
        text = str(exc).strip().splitlines()
        raise SessionError(f"{path} is not a valid ONNX model: {text[0] if text else type(exc).__name__}") from exc
    inits = {i.name for i in proto.graph.initializer}
    graph_inputs = [i for i in proto.graph.input if i.name not in inits]
    shapes, dtypes = [], set()
    for i in graph_inputs:
        t = i.type.tensor_type
        shapes.append([d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in t.shape.dim])
        dtypes.add(t.elem_type)
    unsupported = dtypes - set(_DTYPES)
    if unsupported or not graph_inputs:
        raise SessionError(f"{path}: inputs must be float32 or float16 tensors")
    return OnnxSignature([i.name for i in graph_inputs], shapes, _DTYPES[min(dtypes)], proto)


def check_inputs(model: nn.Module, sig: OnnxSignature, inputs: tuple[torch.Tensor, ...]) -> None:
    """The ONNX file and the PyTorch model must take the same inputs; name the first mismatch."""
    if len(sig.names) != len(inputs):
        raise InputError(f"the ONNX model takes {len(sig.names)} inputs ({', '.join(sig.names)}), "
                         f"{len(inputs)} were given")
    params = list(inspect.signature(model.forward).parameters.values())
    positional = [p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if not any(p.kind == p.VAR_POSITIONAL for p in params) and positional[:len(sig.names)] != sig.names:
        raise InputError(f"the ONNX model's inputs are named {sig.names}, the model's forward takes "
                         f"{positional}: is this ONNX file exported from this model?")
    for name, declared, t in zip(sig.names, sig.shapes, inputs):
        problem = shape_mismatch(["batch", *declared[1:]] if declared else declared, t.shape)
        if problem:
            raise InputError(f"ONNX input {name!r} has shape {declared}, the input has shape "
                             f"{list(t.shape)} ({problem})")


def eager_outputs(model: nn.Module, inputs: tuple[torch.Tensor, ...], dtype: torch.dtype) -> list[np.ndarray]:
    """Run a copy of ``model`` in eval mode at ``dtype``; outputs flattened to a list."""
    import copy

    work = copy.deepcopy(model).eval().to(dtype)
    with torch.no_grad():
        out = work(*(t.to(dtype) if t.is_floating_point() else t for t in inputs))
    return [t.detach().cpu().double().numpy() for t in tree_leaves(out) if isinstance(t, torch.Tensor)]


def verify(
    model: nn.Module,
    onnx_path: str | os.PathLike,
    example_inputs: Any,
    providers: Sequence[str] = ("cpu",),
    *,
    atol: float | None = None,
    rtol: float | None = None,
    batch_sizes: Sequence[int] | None = None,
    localize: bool = True,
    budget_bytes: int = DEFAULT_BUDGET_BYTES,
) -> VerifyReport:
    """Compare ``onnx_path`` on onnxruntime (and the folded eager model) with ``model`` in float64.

    ``example_inputs``: one tensor or a tuple of tensors, batch axis first; a
    batch of b rows is taken from it with ``inputs.batch_of``. See tolerance.py
    for the rule, localize.py for what is named on failure.
    """
    inputs = as_input_tuple(example_inputs)
    providers = tuple(providers)
    for p in providers:
        provider_name(p)  # unknown names fail before any work
    if "cuda" in providers:
        problem = cuda_problem()
        if problem:
            raise SessionError(f"--providers cuda: {problem}")
    sig = read_onnx(onnx_path)
    check_inputs(model, sig, inputs)
    sizes = _batch_sizes(sig, batch_sizes)
    dtype, tol = sig.dtype, Tolerance(atol=atol, rtol=rtol)
    np_dtype = np.float16 if dtype == torch.float16 else np.float32
    short = "fp16" if dtype == torch.float16 else "fp32"

    with _tf32_off():
        try:
            folded, fold_report = prepare(model, inputs, fold=True, dtype=dtype)
        except FoldError as exc:
            folded, fold_report = None, None
            skipped_fold = f"folded_{short}: not run, {exc}"
        else:
            skipped_fold = None
        sessions = {p: open_session(onnx_path, p) for p in providers}
        report = VerifyReport(rule=tol.describe(np_dtype), environment=_environment(sessions, dtype, sizes))
        if skipped_fold:
            report.notes.append(skipped_fold)
        failing_batch = None
        for b in sizes:
            xb = tuple(torch.from_numpy(batch_of(t.detach().cpu().numpy(), b)) for t in inputs)
            oracle = eager_outputs(model, xb, torch.float64)
            names = [o.name for o in next(iter(sessions.values())).get_outputs()] if sessions else []
            if len(names) != len(oracle):
                names = [f"output{i}" for i in range(len(oracle))]
            ref = eager_outputs(model, xb, dtype)
            ref_errors = []
            for name, o, r in zip(names, oracle, ref):
                stats = ErrorStats.of(o, r)
                ref_errors.append(stats.max_abs)
                report.checks.append(RunCheck(f"original_{short}", name, stats, None, True, b, stats.max_abs))
            runs = {} if folded is None else {f"folded_{short}": eager_outputs(folded, xb, dtype)}
            feed = tuple(t.numpy() for t in xb)
            for p, session in sessions.items():
                runs[f"onnx_{p}"] = run_session(session, feed)
            for run, outs in runs.items():
                if len(outs) != len(oracle):
                    raise SessionError(f"{run}: {len(outs)} outputs, the PyTorch model has {len(oracle)}")
                for name, o, got, e_ref in zip(names, oracle, outs, ref_errors):
                    row = _row(run, name, o, got, e_ref, b, tol, np_dtype)
                    report.checks.append(row)
                    if not row.ok and failing_batch is None:
                        failing_batch = xb
        if failing_batch is not None and localize:
            _localize(report, model, folded, fold_report, sig, failing_batch, dtype, budget_bytes)
    return report


def _row(run, name, oracle, got, e_ref, batch, tol: Tolerance, np_dtype) -> RunCheck:
    got = np.asarray(got, dtype=np.float64)
    if got.shape != oracle.shape:
        raise SessionError(f"{run}: output {name!r} has shape {list(got.shape)}, the PyTorch model's has "
                           f"{list(oracle.shape)}")
    stats = ErrorStats.of(oracle, got)
    allowed = tol.allowed(e_ref, stats.scale, np_dtype)
    ok = bool(stats.max_abs <= allowed)
    least = None if ok else minimum_passing(stats.max_abs, e_ref, stats.scale, np_dtype)
    if least is not None and tol.explicit:
        least.pop("k")
    return RunCheck(run, name, stats, allowed, ok, batch, e_ref, least)


def _localize(report: VerifyReport, model, folded, fold_report, sig: OnnxSignature, inputs, dtype, budget) -> None:
    failed_runs = [c.run for c in report.failures()]
    if any(r.startswith("folded_") for r in failed_runs):
        site = first_fold_site(model, folded, inputs, fold_report, dtype, budget)
        if site:
            report.localization.append(site)
        else:
            report.notes.append("localization: every fold site matches the oracle; the divergence is elsewhere "
                                "in the folded model")
    onnx_runs = [r for r in dict.fromkeys(failed_runs) if r.startswith("onnx_")]
    if onnx_runs:
        provider = onnx_runs[0].removeprefix("onnx_")
        node = first_onnx_node(model, sig.proto, inputs, fold_report, dtype, provider, budget)
        if node:
            report.localization.append(node)
        else:
            report.notes.append(f"localization: no ONNX node with module-named weights diverges on {provider}; "
                                "the divergence is in a node without weights, or only at the outputs")


def _batch_sizes(sig: OnnxSignature, requested: Sequence[int] | None) -> tuple[int, ...]:
    declared = sig.shapes[0][0] if sig.shapes[0] else None
    if requested is None:
        return DYNAMIC_BATCH_SIZES if sig.dynamic_batch else (declared or 1,)
    requested = tuple(int(b) for b in requested)
    if any(b < 1 for b in requested):
        raise InputError(f"batch sizes must be positive, got {list(requested)}")
    if not sig.dynamic_batch and any(b != declared for b in requested):
        raise InputError(f"the ONNX model has a fixed batch size of {declared}; cannot check batch sizes "
                         f"{list(requested)}")
    return requested


@contextlib.contextmanager
def _tf32_off():
    flags = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = flags


def _environment(sessions: dict, dtype: torch.dtype, sizes) -> dict:
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
        "dtype": str(dtype).removeprefix("torch."),
        "batch_sizes": list(sizes),
        "eager_device": "cpu",
        "torch_tf32": {"cuda.matmul.allow_tf32": False, "cudnn.allow_tf32": False},
        "providers": {p: provider_options(s) for p, s in sessions.items()},
    }
