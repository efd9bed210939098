"""Localization: the first place where a checked model leaves the oracle.

Two scans, both against the original model in float64 (forward hooks on its
modules), each intermediate judged by the same rule as the outputs
(tolerance.py) with the original model's own error *at that intermediate* as
e_ref:

* fold sites: for each fold ``norm -> producer`` (in graph order), the folded
  eager model's producer output against the original's norm output;
* ONNX nodes: every node whose initializers are named after a module
  (``layer1.0.conv1.weight``) stands for that module's output; the last such
  node of a module is exposed as an extra graph output on an in-memory copy of
  the model. A module whose weights in the file are the original's is compared
  with its own output; one whose weights differ absorbed a norm, and is
  compared with the output of the last norm its fold absorbed (per the fold
  report), never with its own pre-norm output (skipped when the report names
  no such norm).

With an ONNX oracle (the original .onnx file) there are no modules; the scan
is by tensor name:

* shared tensors: every tensor, in the original graph's topological order, that
  a node of the checked graph also produces under the same name (normfold's
  ONNX pass keeps the names of what it does not touch, and gives what it
  rewrites the name of the value it now computes). The oracle is the original
  graph in float64 (onnx.reference), the reference the original file on
  onnxruntime, the candidate the checked file on onnxruntime; the divergence
  names the checked graph's node that produces the tensor.

Intermediates are fetched in chunks whose float64 size stays under
``budget_bytes`` (three copies: oracle, reference, candidate), so a large model
is scanned in several passes instead of holding every activation at once.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Callable, Iterable

import numpy as np
import onnx
import onnx.numpy_helper
import torch
from torch import nn

from ..fold import FoldReport
from .metrics import ErrorStats
from .oracle import with_outputs
from .session import open_session, run_session
from .tolerance import Tolerance

DEFAULT_BUDGET_BYTES = 512 * 2**20


@dataclass(frozen=True)
class Divergence:
    kind: str                  # "fold site" or "onnx node"
    module: str                # the module whose output diverges, in the checked model ("" for an ONNX oracle)
    reference: str             # the original model's module it is compared with ("" for an ONNX oracle)
    node: str | None = None    # ONNX node name and op type, for kind == "onnx node"
    op_type: str | None = None
    fold_site: str | None = None   # "norm -> producer" when the module absorbed a norm
    max_abs: float = 0.0
    allowed: float = 0.0
    tensor: str | None = None  # the diverging tensor, with an ONNX oracle

    def describe(self) -> str:
        if self.kind == "onnx node":
            owner = f"module {self.module}" if self.module else f"tensor {self.tensor}"
            where = f"ONNX node {self.node} ({self.op_type}), {owner}"
        else:
            where = f"fold site {self.fold_site}"
        against = "" if self.reference == self.module else f" (compared with {self.reference}'s output)"
        site = f"; fold site {self.fold_site}" if self.fold_site and self.kind == "onnx node" else ""
        return (f"first divergence: {where}{against}{site}: max_abs {self.max_abs:.3g} > allowed "
                f"{self.allowed:.3g}")


@dataclass(frozen=True)
class _Candidate:
    key: str                   # hook name (eager) or value name (ONNX)
    module: str
    reference: str
    node: str | None = None
    op_type: str | None = None
    fold_site: str | None = None


def module_outputs(model: nn.Module, inputs: tuple[torch.Tensor, ...], names: Iterable[str],
                   dtype: torch.dtype) -> dict[str, np.ndarray]:
    """Output of each named module (its last call) on a copy of ``model`` at ``dtype``, as float64."""
    work = copy.deepcopy(model).eval().to(dtype)
    found: dict[str, np.ndarray] = {}
    handles = []
    modules = dict(work.named_modules())
    for name in names:
        if name in modules:
            handles.append(modules[name].register_forward_hook(_recorder(found, name)))
    try:
        with torch.no_grad():
            work(*(t.to(dtype) if t.is_floating_point() else t for t in inputs))
    finally:
        for h in handles:
            h.remove()
    return found


def first_fold_site(original: nn.Module, folded: nn.Module, inputs: tuple[torch.Tensor, ...],
                    report: FoldReport, dtype: torch.dtype, budget_bytes: int = DEFAULT_BUDGET_BYTES) -> Divergence | None:
    """The first fold site whose folded producer output leaves the oracle, or None."""
    candidates = [
        _Candidate(key=into, module=into, reference=ref, fold_site=site)
        for into, (ref, site) in fold_references(original, report).items() if ref is not None
    ]

    def got(chunk):
        return module_outputs(folded, inputs, [c.key for c in chunk], dtype)

    return _scan(original, inputs, candidates, dtype, got, "fold site", budget_bytes)


def first_onnx_node(original: nn.Module, proto, inputs: tuple[torch.Tensor, ...], report: FoldReport | None,
                    dtype: torch.dtype, provider: str = "cpu",
                    budget_bytes: int = DEFAULT_BUDGET_BYTES) -> Divergence | None:
    """The first ONNX node (graph order) whose output leaves the oracle, or None."""
    candidates = onnx_candidates(proto, report, original)
    feed = tuple(t.detach().cpu().to(dtype).numpy() for t in inputs)

    def got(chunk):
        names = [c.key for c in chunk]
        values = run_session(open_session(with_outputs(proto, names).SerializeToString(), provider), feed, names)
        return dict(zip(names, values))

    return _scan(original, inputs, candidates, dtype, got, "onnx node", budget_bytes)


def first_shared_tensor(oracle, checked, batch: tuple[np.ndarray, ...], np_dtype, provider: str = "cpu",
                        budget_bytes: int = DEFAULT_BUDGET_BYTES) -> Divergence | None:
    """The first tensor both graphs produce whose value in ``checked`` leaves an ONNX oracle's, or None.

    ``oracle``: an OnnxOracle (the original graph); ``checked``: the ModelProto under test.
    """
    producer = {out: node for node in checked.graph.node for out in node.output if out}
    order = list(dict.fromkeys(out for node in oracle.proto.graph.node for out in node.output if out in producer))
    if not order:
        return None
    truth = dict(zip(order, oracle.run(batch, order)))
    sizes = {k: v.size for k, v in truth.items() if np.issubdtype(v.dtype, np.floating)}
    candidates = [_Candidate(key=name, module="", reference=name) for name in order if name in sizes]
    for chunk in _chunks(candidates, sizes, budget_bytes):
        names = [c.key for c in chunk]
        ref = oracle.reference(batch, np_dtype, names=names, provider=provider)
        got = run_session(open_session(with_outputs(checked, names).SerializeToString(), provider), batch, names)
        for name, r, g in zip(names, ref, got):
            found = _leaves(truth[name], r, np.asarray(g, dtype=np.float64), np_dtype)
            if found:
                node = producer[name]
                return Divergence("onnx node", "", "", node.name, node.op_type, None, *found, name)
    return None


def onnx_candidates(proto, report: FoldReport | None, original: nn.Module) -> list[_Candidate]:
    """Per module with named initializers: the value its last node produces, in graph order."""
    inits = {i.name for i in proto.graph.initializer}
    module_names = {n for n, _ in original.named_modules()}
    last: dict[str, tuple[int, str, str, str]] = {}
    for index, node in enumerate(proto.graph.node):
        for name in node.input:
            module = name.rpartition(".")[0]
            if name in inits and module in module_names and node.output:
                last[module] = (index, node.output[0], node.name, node.op_type)
    absorbed = fold_references(original, report) if report else {}
    rewritten = _rewritten(proto, original, set(last))
    candidates = []
    for module, (_, value, node, op) in sorted(last.items(), key=lambda kv: kv[1][0]):
        ref, site = absorbed.get(module, (None, None))
        if module not in rewritten:
            ref, site = module, None   # the original's weights: its own output is the reference
        elif ref is None:
            continue  # rewritten, and no module of the original computes what it now computes
        candidates.append(_Candidate(key=value, module=module, reference=ref, node=node, op_type=op, fold_site=site))
    return candidates


def _rewritten(proto, original: nn.Module, modules: set[str]) -> set[str]:
    """The ``modules`` some of whose named initializers differ from the original's tensors of that name.

    A layer that absorbed a norm computes the norm's output, not its own: it
    must never be compared with its own (pre-norm) output in the original,
    whatever names the fold report gives. The original's tensor is cast to the
    initializer's dtype first (an fp16 file holds the fp16 cast); a 2-d weight
    stored transposed counts as the same.
    """
    state = {k: v.detach().cpu() for k, v in original.state_dict().items()}
    out = set()
    for init in proto.graph.initializer:
        module = init.name.rpartition(".")[0]
        if module not in modules or init.name not in state:
            continue
        if not state[init.name].is_floating_point():
            continue
        mine = onnx.numpy_helper.to_array(init)
        theirs = state[init.name].numpy().astype(mine.dtype)
        if not (_same(mine, theirs) or (theirs.ndim == 2 and _same(mine, theirs.T))):
            out.add(module)
    return out


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and bool(np.array_equal(a, b))


def fold_references(original: nn.Module, report: FoldReport) -> dict[str, tuple[str | None, str]]:
    """Folded layer -> (the original module whose output it must equal, or None; "norm -> layer").

    Backward (``layer -> norms``): the last norm of the chain. Forward
    (``norms -> layer``): the layer itself. None where the original has no such
    point: a norm+activation composite (its output is after the activation,
    the folded layer's before it), several producers (cat/add folds) or none.
    """
    from ..nn.composite import is_composite

    modules = dict(original.named_modules())
    out: dict[str, tuple[str | None, str]] = {}
    for f in report.folded:
        if not f.into or "," in f.into:
            continue
        chain = f.chain or (f.norm,)
        forward = f.direction == "forward"
        ref = f.into if forward else chain[-1]
        module = modules.get(ref)
        if module is None or (not forward and is_composite(module)):
            ref = None
        out[f.into] = (ref, f"{' -> '.join(chain)} -> {f.into}")
    return out


def _scan(original: nn.Module, inputs, candidates: list[_Candidate], dtype: torch.dtype,
          got: Callable[[list[_Candidate]], dict[str, np.ndarray]], kind: str, budget_bytes: int) -> Divergence | None:
    if not candidates:
        return None
    refs = {c.reference for c in candidates}
    sizes = {k: v.size for k, v in module_outputs(original, inputs, refs, torch.float32).items()}
    candidates = [c for c in candidates if c.reference in sizes]
    np_dtype = np.float16 if dtype == torch.float16 else np.float32
    for chunk in _chunks(candidates, sizes, budget_bytes):
        names = {c.reference for c in chunk}
        oracle = module_outputs(original, inputs, names, torch.float64)
        lowp = module_outputs(original, inputs, names, dtype)
        values = got(chunk)
        for c in chunk:
            o, r, g = oracle.get(c.reference), lowp.get(c.reference), values.get(c.key)
            if o is None or r is None or g is None or g.size != o.size:
                continue  # no comparable counterpart (e.g. a value of another shape)
            found = _leaves(o, r, np.asarray(g, dtype=np.float64).reshape(o.shape), np_dtype)
            if found:
                return Divergence(kind, c.module, c.reference, c.node, c.op_type, c.fold_site, *found)
    return None


def _leaves(oracle: np.ndarray, ref: np.ndarray, got: np.ndarray, np_dtype) -> tuple[float, float] | None:
    """(max_abs, allowed) where ``got`` leaves the float64 value ``oracle`` by more than the derived rule
    allows, e_ref = max|ref - oracle| (``ref``: the original's own value in the checked dtype); None within
    it, or where the three are not one value (their shapes differ). Localization always uses the derived
    rule: an explicit atol has no meaning for an intermediate tensor."""
    if got.shape != oracle.shape or ref.shape != oracle.shape:
        return None
    stats = ErrorStats.of(oracle, got)
    allowed = Tolerance().allowed(float(np.abs(ref - oracle).max(initial=0.0)), stats.scale, np_dtype)
    return None if stats.max_abs <= allowed else (stats.max_abs, allowed)


def _chunks(candidates: list[_Candidate], sizes: dict[str, int], budget_bytes: int):
    chunk, used = [], 0
    for c in candidates:
        cost = 3 * 8 * sizes[c.reference]
        if chunk and used + cost > budget_bytes:
            yield chunk
            chunk, used = [], 0
        chunk.append(c)
        used += cost
    if chunk:
        yield chunk


def _recorder(found: dict, name: str):
    def hook(module, args, output):
        tensor = output if isinstance(output, torch.Tensor) else next(
            (t for t in (output if isinstance(output, (tuple, list)) else ()) if isinstance(t, torch.Tensor)), None)
        if tensor is not None:
            # clone: an in-place op downstream (ReLU(inplace=True)) would change it
            found[name] = tensor.detach().to(torch.float64).cpu().numpy().copy()
    return hook
