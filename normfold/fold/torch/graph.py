"""The graph pass: find norm sites with torch.fx and hand them to the fold rules.

The pass knows no algebra and no layer types: it only finds sites, composes
chains and does the graph surgery the rules ask for.

1. Work on a deep copy in eval mode (the caller's model is never touched);
   computed weights are baked first. Trace with fx, norm layers as leaves, and
   propagate shapes from the example inputs.
2. Group consecutive norm nodes into chains (``norm -> norm`` where the first
   feeds only the second) and compose each chain into one map.
3. Backward pass: fold the longest prefix of each chain into the layer that
   produces its input (always exact). Safety: the producer's output must feed
   only the chain (or, with ``clone_shared=True``, the producer is cloned for
   the chain's branch); a producer module called at several sites is never
   edited in place, the fold gets its own copy. Anything between the layer and
   the norm (an activation, an add, a reshape) blocks the fold.
4. Forward pass: fold the longest suffix of what is left into the single
   layer that consumes its output.
5. Every norm not folded is reported with the reason each direction failed.
"""
from __future__ import annotations

import copy
import operator
import warnings
from collections import Counter
from dataclasses import dataclass
from typing import Any, Sequence

import torch
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp

from ..._messages import root_cause
from ..._quiet import quiet
from ...nn.affine import inference_affine, is_norm, not_foldable_reason
from ...nn.statistics import statistics_problem
from ...nn.bake import bake_weights
from ..algebra import ChannelMap, cast, compose
from ..report import FoldReport, Folded, Skipped
from .rules import BACKWARD, FORWARD, Rewrite, Site, rule_for
from ..errors import FoldError
from .examples import check_example_inputs
from .trace import describe, trace


@dataclass
class FoldResult:
    model: nn.Module
    report: FoldReport


def as_input_tuple(example_inputs: Any) -> tuple[torch.Tensor, ...]:
    """Accept one tensor or a sequence of tensors; name the problem otherwise."""
    inputs = (example_inputs,) if isinstance(example_inputs, torch.Tensor) else tuple(example_inputs)
    for i, t in enumerate(inputs):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"example_inputs[{i}] is {type(t).__name__}, expected a torch.Tensor")
    return inputs


def fold(model: nn.Module, example_inputs: Any, *, densify: bool = False, clone_shared: bool = False) -> FoldResult:
    """Fold every foldable norm into a neighbouring Conv/ConvTranspose/Linear.

    Returns a new eval-mode module and a report naming, for every norm layer,
    what it was folded into or why it was not. ``model`` is not modified.

    ``densify``: allow a channel-mixing map (whitening) to make a grouped or
    depthwise conv denser (fewer groups; exact, more MACs).
    ``clone_shared``: when a producer's output also feeds something else, fold
    into a copy of the producer for the norm's branch instead of skipping.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"fold: model must be a torch.nn.Module, got {type(model).__name__}")
    inputs = as_input_tuple(example_inputs)
    check_example_inputs(model, inputs)
    report = FoldReport(warnings=_state_warnings(model))
    if report.warnings:
        more = f" (and {len(report.warnings) - 1} more, see the report)" if len(report.warnings) > 1 else ""
        warnings.warn(f"normfold.fold: {report.warnings[0]}{more}", stacklevel=2)

    work = bake_weights(copy.deepcopy(model).eval())
    traced = trace(work)
    gm = traced.graph_module
    _propagate_shapes(gm, inputs)
    _Pass(gm, report, densify=densify, clone_shared=clone_shared).run()

    reported = {f.norm for f in report.folded} | {s.norm for s in report.skipped}
    for name, module in work.named_modules():
        if is_norm(module) and not _accounted(reported, name):
            inside = next((o for o in traced.opaque if name.startswith(o + ".")), None)
            reason = (
                f"inside {inside}, which torch.fx could not trace ({traced.opaque[inside]})"
                if inside else "not called in the traced forward"
            )
            report.skipped.append(Skipped(norm=name, reason=reason))

    gm.graph.lint()
    gm.delete_all_unused_submodules()
    gm.recompile()
    return FoldResult(model=gm.eval(), report=report)


def _accounted(reported: set[str], name: str) -> bool:
    """Whether the report names module ``name``, itself or one of its call sites."""
    return name in reported or any(n.startswith(name + "[call ") for n in reported)


def _state_warnings(model: nn.Module) -> list[str]:
    out = []
    for name, m in model.named_modules():
        if not is_norm(m) or not_foldable_reason(m) is not None:
            continue
        if m.training:
            out.append(f"{name or type(m).__name__} is in training mode; folded from its running statistics "
                       "(the folded model is in eval mode)")
        tracked = getattr(m, "num_batches_tracked", None)
        if isinstance(tracked, torch.Tensor) and int(tracked) == 0:
            out.append(f"{name or type(m).__name__} never updated its statistics (num_batches_tracked == 0): "
                       "its running statistics are still their initial values")
    return out


@quiet()   # torch's ShapeProp prints a traceback of its own; the FoldError carries the message
def _propagate_shapes(gm: fx.GraphModule, inputs: tuple[torch.Tensor, ...]) -> None:
    """Shapes of every node: fake tensors (no compute) when possible, else a real run."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    try:
        mode = FakeTensorMode(allow_non_fake_inputs=True)
        _ShapeOnly(gm, mode).propagate(*(mode.from_tensor(t) for t in inputs))
        return
    except Exception:
        for node in gm.graph.nodes:
            node.meta.pop("val", None)
    try:
        with torch.no_grad():
            ShapeProp(gm).propagate(*inputs)
    except Exception as exc:
        shapes = ", ".join(str(tuple(t.shape)) for t in inputs)
        raise FoldError(f"{type(gm).__name__} rejects example inputs of shape {shapes}: {describe(root_cause(exc))}") from exc


def _shape_only_class():
    from torch.fx.passes.fake_tensor_prop import FakeTensorProp

    class ShapeOnly(FakeTensorProp):
        """Fake-tensor propagation where a norm layer is the identity on shapes (its
        fake batch_norm decomposition would dominate the cost of the whole pass)."""

        def call_module(self, target, args, kwargs):
            if is_norm(self.fetch_attr(target)) and len(args) == 1 and not kwargs:
                return args[0]
            return super().call_module(target, args, kwargs)

    return ShapeOnly


def _ShapeOnly(gm, mode):  # noqa: N802 - a lazily built class (keeps `import normfold` light)
    return _shape_only_class()(gm, mode)


def _shape(node: Any) -> tuple[int, ...] | None:
    if not isinstance(node, fx.Node):
        return None
    val = node.meta.get("val")
    if isinstance(val, torch.Tensor):
        return tuple(int(d) for d in val.shape)
    meta = node.meta.get("tensor_meta")
    return tuple(meta.shape) if hasattr(meta, "shape") else None


def _what(node: Any) -> str:
    if not isinstance(node, fx.Node):
        return repr(node)
    if node.op == "call_module":
        return str(node.target)
    if node.op == "placeholder":
        return f"the model input {node.name!r}"
    if node.op == "output":
        return "the model output"
    target = getattr(node.target, "__name__", str(node.target))
    return f"{node.name} ({target})"


class _Pass:
    def __init__(self, gm: fx.GraphModule, report: FoldReport, *, densify: bool, clone_shared: bool):
        self.gm, self.report = gm, report
        self.densify, self.clone_shared = densify, clone_shared
        self.modules = dict(gm.named_modules())
        self.calls = Counter(n.target for n in gm.graph.nodes if n.op == "call_module")
        self.names: dict[fx.Node, str] = {}
        self.maps: dict[fx.Node, ChannelMap] = {}
        self.why_back: dict[fx.Node, str] = {}
        self.why_fwd: dict[fx.Node, str] = {}
        self.done: set[fx.Node] = set()

    # ---- sites -------------------------------------------------------------------------------
    def run(self) -> None:
        seen: Counter = Counter()
        norms = [n for n in self.gm.graph.nodes if n.op == "call_module" and is_norm(self.modules[n.target])]
        unfoldable = {}
        for node in norms:
            seen[node.target] += 1
            many = self.calls[node.target] > 1
            self.names[node] = f"{node.target}[call {seen[node.target]}]" if many else str(node.target)
            why = self._map_of(node)
            if why is not None:
                unfoldable[node] = why
        for chain in self._chains():
            self._backward(chain)
        for chain in self._chains():
            self._forward(chain)
        for node in norms:
            if node in unfoldable:
                self.report.skipped.append(Skipped(self.names[node], unfoldable[node]))
            elif node not in self.done:
                reason = f"backward: {self.why_back.get(node, '?')}; forward: {self.why_fwd.get(node, '?')}"
                self.report.skipped.append(Skipped(self.names[node], reason))

    def _map_of(self, node: fx.Node) -> str | None:
        module = self.modules[node.target]
        if (why := statistics_problem(module)) is not None:
            return why
        if len(node.args) != 1 or node.kwargs:
            return f"{node.target} is called with {len(node.args)} arguments and {len(node.kwargs)} keywords, not one tensor"
        try:
            self.maps[node] = ChannelMap.of(*inference_affine(module))
        except Exception as exc:  # NotFoldableError, or a user's inference_affine failing
            return str(exc) if type(exc).__name__ == "NotFoldableError" else f"inference_affine failed: {describe(exc)}"
        return None

    def _chains(self) -> list[list[fx.Node]]:
        """Maximal runs norm -> norm (each feeding only the next), in graph order."""
        chains: list[list[fx.Node]] = []
        for node in self.gm.graph.nodes:
            if node not in self.maps or node in self.done:
                continue
            prev = node.args[0]
            if chains and prev is chains[-1][-1] and len(prev.users) == 1:
                chains[-1].append(node)
            else:
                chains.append([node])
        return chains

    def _backward(self, chain: list[fx.Node]) -> None:
        reasons = {}
        for j in range(len(chain), 0, -1):
            reasons[j] = self._try_backward(chain[:j])
            if reasons[j] is None:
                break
        else:
            j = 0
        for i in range(j, len(chain)):
            self.why_back[chain[i]] = reasons[i + 1]

    def _forward(self, chain: list[fx.Node]) -> None:
        for i in range(len(chain)):
            why = self._try_forward(chain[i:])
            if why is None:
                return
            self.why_fwd[chain[i]] = why

    # ---- backward ----------------------------------------------------------------------------
    def _try_backward(self, nodes: list[fx.Node]) -> str | None:
        producer = nodes[0].args[0]
        if not isinstance(producer, fx.Node) or producer.op != "call_module":
            return f"its input is {_what(producer)}, not the output of a Conv/ConvTranspose/Linear"
        module = self.modules[producer.target]
        rule = rule_for(BACKWARD, module)
        if rule is None:
            return f"its input comes from {producer.target} ({type(module).__name__}), not a Conv/ConvTranspose/Linear"
        others = [u for u in producer.users if u is not nodes[0]]
        if others and not self.clone_shared:
            return (f"the output of {producer.target} also feeds {', '.join(_what(u) for u in others)}; "
                    "pass clone_shared=True to fold into a copy of it for this branch")
        site = Site(str(producer.target), module, compose([self.maps[n] for n in nodes]),
                    _shape(producer.args[0] if producer.args else None), _shape(producer), self.densify)
        why = rule.check(site)
        rewrite = rule.rewrite(site) if why is None else why
        if isinstance(rewrite, str):
            return rewrite

        notes = [rewrite.note]
        if others:
            target = self._add_copy(producer.target, rewrite.module)
            with self.gm.graph.inserting_after(producer):
                clone = self.gm.graph.call_module(target, producer.args, producer.kwargs)
            clone.meta = dict(producer.meta)
            nodes[-1].replace_all_uses_with(clone)
            notes.append(f"a copy of {producer.target} for this branch (its output has other users)")
        else:
            target = self._place(producer, rewrite.module, notes)
            nodes[-1].replace_all_uses_with(producer)
        self._record(nodes, target, rule.name, "backward", notes)
        return None

    # ---- forward -----------------------------------------------------------------------------
    def _try_forward(self, nodes: list[fx.Node]) -> str | None:
        tail = nodes[-1]
        users = list(tail.users)
        if len(users) != 1:
            return f"its output feeds {len(users)} nodes ({', '.join(_what(u) for u in users)})"
        consumer = users[0]
        if consumer.op != "call_module":
            return f"its output feeds {_what(consumer)}, not a Conv/Linear"
        module = self.modules[consumer.target]
        rule = rule_for(FORWARD, module)
        if rule is None:
            return f"its output feeds {consumer.target} ({type(module).__name__}), not a Conv/Linear"
        if consumer.args[:1] != (tail,) or tail in consumer.args[1:] or tail in consumer.kwargs.values():
            return f"its output is not the only input of {consumer.target}"
        site = Site(str(consumer.target), module, compose([self.maps[n] for n in nodes]),
                    _shape(tail), _shape(consumer), self.densify)
        why = rule.check(site)
        rewrite = rule.rewrite(site) if why is None else why
        if isinstance(rewrite, str):
            return rewrite
        source = nodes[0].args[0]
        if rewrite.shift is not None:
            source = self._insert_shift(source, consumer, rewrite, module.weight.dtype)
            if isinstance(source, str):
                return source
        consumer.replace_input_with(tail, source)
        notes = [rewrite.note]
        target = self._place(consumer, rewrite.module, notes)
        self._record(nodes, target, rule.name, "forward", notes)
        return None

    def _insert_shift(self, source: Any, consumer: fx.Node, rewrite: Rewrite, dtype: torch.dtype) -> Any:
        rank = len(_shape(consumer.args[0]) or (0, 0))
        nu, why = cast(rewrite.shift.reshape(1, -1, *([1] * (rank - 2))), dtype)
        if why is not None:
            return f"the input shift x - nu does not fit: {why}"
        name = self._free_name(f"{str(consumer.target).replace('.', '_')}_shift")
        self.gm.register_buffer(name, nu.to(rewrite.module.weight.device))
        with self.gm.graph.inserting_before(consumer):
            attr = self.gm.graph.get_attr(name)
            return self.gm.graph.call_function(operator.sub, (source, attr))

    # ---- surgery -----------------------------------------------------------------------------
    def _place(self, node: fx.Node, module: nn.Module, notes: list[str]) -> str:
        """Install the folded layer for this call site: in place if called once, else a copy."""
        target = str(node.target)
        if self.calls[target] > 1:
            self.calls[target] -= 1
            node.target = self._add_copy(target, module)
            notes.append(f"own copy: {target} is called at several sites")
            return node.target
        parent, _, child = target.rpartition(".")
        setattr(self.gm.get_submodule(parent) if parent else self.gm, child, module)
        self.modules[target] = module
        return target

    def _add_copy(self, target: str, module: nn.Module) -> str:
        name = self._free_name(target.replace(".", "_") + "_folded")
        self.gm.add_submodule(name, module)
        self.modules[name] = module
        self.calls[name] = 1
        return name

    def _free_name(self, base: str) -> str:
        k = 1
        while hasattr(self.gm, f"{base}{k}"):
            k += 1
        return f"{base}{k}"

    def _record(self, nodes: list[fx.Node], into: str, rule: str, direction: str, notes: list[str]) -> None:
        chain = tuple(self.names[n] for n in nodes)
        note = "; ".join(n for n in notes if n)
        for n in reversed(nodes):
            self.gm.graph.erase_node(n)
            self.done.add(n)
        for name in chain:
            self.report.folded.append(Folded(name, into, direction, rule, chain, note))


__all__: Sequence[str] = ("FoldError", "FoldResult", "as_input_tuple", "fold")
