"""The graph pass: find norm sites in one traced module and hand them to the fold rules.

The pass knows no algebra and no layer types: it finds sites, checks maps,
composes chains and does the graph surgery the rules ask for.

1. Split composites (a norm followed by parts of its own, ``split.py``) whose
   parts compute the module's forward; check every norm's map against its own
   forward (``probe.py``): a map is never taken on the word of a class.
2. Group consecutive norm nodes into chains (``norm -> norm`` where the first
   feeds only the second; uses of its shape alone do not count) and compose
   each chain into one map.
3. Backward pass: fold the longest prefix of each chain into the layer(s) that
   produce its input, through no-ops, reshapes, a cat or an add
   (``between.py``; always exact). Safety: every value on the way feeds only
   the next step (with ``clone_shared=True`` a single producer whose output
   has other users is cloned for the chain's branch); a producer module called
   at several sites is never edited in place, the fold gets its own copy.
4. Forward pass: fold the longest suffix of what is left into the single
   layer that consumes its output (through no-ops and reshapes).
5. Every norm not folded is reported with the reason each direction failed;
   a composite whose norm folded nowhere is put back whole.

The report names every module by its path in the model (``FoldPass.label``):
a part folded on its own (``parts.py``) has its path as prefix, and a
composite's norm part goes by the composite's name.
"""
from __future__ import annotations

import operator
from collections import Counter
from dataclasses import dataclass
from functools import partial

import torch
from torch import fx, nn

from ...nn._channels import channel_view
from ...nn.affine import inference_affine, is_norm, map_source
from ...nn.statistics import statistics_problem
from ..algebra import ChannelMap, cast, compose, split_channels, without_shift
from ..report import FoldReport, Folded, Skipped
from .between import Inflow, inflow, layout_of, shape_of, value_users, walk_down, what
from .layer_check import checked_rewrite
from .probe import map_reason
from .rules import BACKWARD, FORWARD, Rewrite, Site, rule_for
from .split import restore_unfolded, split_composites
from .trace import describe


@dataclass(frozen=True)
class Options:
    densify: bool = False
    clone_shared: bool = False


class FoldPass:
    """Fold the norms of one traced module ``gm`` in place; ``prefix``: its path in the model (see ``label``)."""

    def __init__(self, gm: fx.GraphModule, report: FoldReport, options: Options, prefix: str = ""):
        self.gm, self.report, self.options, self.prefix = gm, report, options, prefix
        self.aliases: dict[str, str] = {}   # a composite's norm part -> the composite
        self.names: dict[fx.Node, str] = {}
        self.maps: dict[fx.Node, ChannelMap] = {}
        self.why_back: dict[fx.Node, str] = {}
        self.why_fwd: dict[fx.Node, str] = {}
        self.done: set[fx.Node] = set()
        self._index()

    def _index(self) -> None:
        self.modules = dict(self.gm.named_modules())
        self.calls = Counter(n.target for n in self.gm.graph.nodes if n.op == "call_module")

    def _norm_nodes(self) -> list[fx.Node]:
        return [n for n in self.gm.graph.nodes if n.op == "call_module" and is_norm(self.modules[n.target])]

    def label(self, target: str) -> str:
        """The report's name for module ``target`` of this graph: its path in the model ("": this module)."""
        return ".".join(p for p in (self.prefix, self.aliases.get(str(target), str(target))) if p)

    # ---- sites -------------------------------------------------------------------------------
    def run(self) -> None:
        splits, unfoldable = split_composites(self.gm, self._norm_nodes(), self.label)
        self._index()
        self.aliases = {s.norm_target: s.target for s in splits}
        checked: dict[tuple, ChannelMap | str] = {s.norm_target: s.map for s in splits}
        seen: Counter = Counter()
        norms = self._norm_nodes()
        for node in norms:
            seen[node.target] += 1
            name = self.label(node.target)
            self.names[node] = f"{name}[call {seen[node.target]}]" if self.calls[node.target] > 1 else name
            if node in unfoldable:
                continue
            # one check per module and input shape (a split composite's norm: checked with its parts)
            key = node.target if node.target in checked else (node.target, _call_key(node))
            if key not in checked:
                checked[key] = self._map_of(node)
            if isinstance(checked[key], str):
                unfoldable[node] = checked[key]
            else:
                self.maps[node] = checked[key]
        for chain in self._chains():
            self._backward(chain)
        for chain in self._chains():
            self._forward(chain)
        for node in norms:
            if node in unfoldable:
                reason = unfoldable[node]
            elif node not in self.done:
                reason = f"backward: {self.why_back.get(node, '?')}; forward: {self.why_fwd.get(node, '?')}"
            else:
                continue
            self.report.skipped.append(Skipped(self.names[node], reason))
        restore_unfolded(self.gm, splits, self.done)

    def _map_of(self, node: fx.Node) -> ChannelMap | str:
        """The norm's map, checked against its forward at this call's input shape, or why it has none."""
        module = self.modules[node.target]
        if (why := statistics_problem(module)) is not None:
            return why
        if len(node.args) != 1 or node.kwargs:
            return (f"{self.label(node.target)} is called with {len(node.args)} arguments and "
                    f"{len(node.kwargs)} keywords, not one tensor")
        try:
            m = ChannelMap.of(*inference_affine(module))
        except Exception as exc:  # NotFoldableError, or a user's inference_affine failing
            return str(exc) if type(exc).__name__ == "NotFoldableError" else f"inference_affine failed: {describe(exc)}"
        why = map_reason(module, m, shape_of(node.args[0]), map_source(module))
        return m if why is None else why

    def _chains(self) -> list[list[fx.Node]]:
        """Maximal runs norm -> norm (each feeding only the next), in graph order."""
        chains: list[list[fx.Node]] = []
        for node in self.gm.graph.nodes:
            if node not in self.maps or node in self.done:
                continue
            prev = node.args[0]
            if chains and prev is chains[-1][-1] and value_users(prev) == [node]:
                chains[-1].append(node)
            else:
                chains.append([node])
        return chains

    def _backward(self, chain: list[fx.Node]) -> None:
        flow = inflow(chain[0], self.modules, lambda m: rule_for(BACKWARD, m) is not None, self.label)
        if isinstance(flow, str):   # the same for every prefix of the chain
            self.why_back.update(dict.fromkeys(chain, flow))
            return
        reasons = {}
        for j in range(len(chain), 0, -1):
            reasons[j] = self._attempt(partial(self._plan_backward, flow), self._apply_backward, chain[:j])
            if reasons[j] is None:
                break
        else:
            j = 0
        for i in range(j, len(chain)):
            self.why_back[chain[i]] = reasons[i + 1]

    def _forward(self, chain: list[fx.Node]) -> None:
        for i in range(len(chain)):
            why = self._attempt(self._plan_forward, self._apply_forward, chain[i:])
            if why is None:
                return
            self.why_fwd[chain[i]] = why

    @staticmethod
    def _attempt(plan, apply, nodes: list[fx.Node]) -> str | None:
        """Plan the fold (no surgery: a rule failing on a layer it matched refuses the site), then apply it."""
        try:
            planned = plan(nodes)
        except Exception as exc:
            return f"the fold rule failed: {describe(exc)}"
        if isinstance(planned, str):
            return planned
        apply(nodes, *planned)
        return None

    # ---- backward ----------------------------------------------------------------------------
    def _plan_backward(self, flow: Inflow, nodes: list[fx.Node]) -> tuple | str:
        maps = self._branch_maps(flow, compose([self.maps[n] for n in nodes]))
        if isinstance(maps, str):
            return maps
        if flow.shared and not self.options.clone_shared:   # only a single layer has other users
            return (f"the output of {what(flow.branches[0].layer, self.label)} also feeds "
                    f"{', '.join(what(u, self.label) for u in flow.shared)}; "
                    "pass clone_shared=True to fold into a copy of it for this branch")
        planned = []
        for branch, bm in zip(flow.branches, maps):
            module = self.modules[branch.layer.target]
            rule = rule_for(BACKWARD, module)
            site = Site(self.label(branch.layer.target), module, bm,
                        shape_of(branch.layer.args[0] if branch.layer.args else None), shape_of(branch.layer),
                        self.options.densify, branch.layout)
            rewrite = checked_rewrite(rule, site)
            if isinstance(rewrite, str):
                return rewrite if len(flow.branches) == 1 else f"{site.name}: {rewrite}"
            planned.append((branch, rule, rewrite))
        return flow, planned

    def _apply_backward(self, nodes: list[fx.Node], flow: Inflow, planned: list) -> None:
        targets, notes = [], [flow.describe(self.label)]
        for branch, rule, rewrite in planned:
            notes.append(rewrite.note)
            if flow.shared:
                targets.append(self.label(self._clone_for_branch(branch.layer, rewrite, flow, nodes[0])))
                notes.append(f"a copy of {self.label(branch.layer.target)} for this branch (its output has other users)")
            else:
                targets.append(self._place(branch.layer, rewrite.module, notes))
        if flow.kind:
            notes.append("each layer takes its channels of the map" if flow.kind == "cat"
                         else f"A into each layer, c into {targets[0]}")
        self._record(nodes, nodes[0].args[0], ", ".join(targets),
                     "+".join(dict.fromkeys(r.name for _, r, _ in planned)), "backward", notes)

    @staticmethod
    def _branch_maps(flow: Inflow, m: ChannelMap) -> list[ChannelMap] | str:
        """Each branch's part of ``m``: its channels of a cat; of an add, A for every term and c for the first."""
        if len(flow.branches) == 1:
            return [m]
        if flow.kind == "cat":
            sizes = [b.layout[0] for b in flow.branches]
            if sum(sizes) != m.channels:
                return f"the cat's {sum(sizes)} channels do not match the norm's {m.channels}"
            maps = split_channels(m, sizes)
            if maps is None:
                return "its map mixes channels across the concatenated layers, so no layer can take its part alone"
            return maps
        return [m] + [without_shift(m)] * (len(flow.branches) - 1)

    def _clone_for_branch(self, layer: fx.Node, rewrite: Rewrite, flow: Inflow, norm: fx.Node) -> str:
        target = self._add_copy(str(layer.target), rewrite.module)
        with self.gm.graph.inserting_after(layer):
            clone = self.gm.graph.call_module(target, layer.args, layer.kwargs)
        clone.meta = dict(layer.meta)
        (flow.path[0] if flow.path else norm).replace_input_with(layer, clone)
        return target

    # ---- forward -----------------------------------------------------------------------------
    def _plan_forward(self, nodes: list[fx.Node]) -> tuple | str:
        tail = nodes[-1]
        found = walk_down(tail, self.modules, self.label)
        if isinstance(found, str):
            return found
        consumer, path = found
        last = path[-1] if path else tail
        through = f" (through {', '.join(what(n, self.label) for n in path)})" if path else ""
        if consumer.op != "call_module":
            return f"its output feeds {what(consumer, self.label)}{through}, not a Conv/Linear"
        module = self.modules[consumer.target]
        rule = rule_for(FORWARD, module)
        if rule is None:
            return f"its output feeds {self.label(consumer.target)} ({type(module).__name__}){through}, not a Conv/Linear"
        if consumer.args[:1] != (last,) or last in consumer.args[1:] or last in consumer.kwargs.values():
            return f"its output is not the only input of {self.label(consumer.target)}"
        site = Site(self.label(consumer.target), module, compose([self.maps[n] for n in nodes]),
                    shape_of(last), shape_of(consumer), self.options.densify, layout_of(shape_of(tail)))
        rewrite = checked_rewrite(rule, site)
        if isinstance(rewrite, str):
            return rewrite
        shift = None
        if rewrite.shift is not None:   # the norm's input shape is known: its map was checked at it
            like = torch.empty(shape_of(nodes[0].args[0]), device="meta")
            shift, why = cast(channel_view(rewrite.shift, like), module.weight.dtype)
            if why is not None:
                return f"the input shift x - nu does not fit: {why}"
        return consumer, path, rule, rewrite, shift

    def _apply_forward(self, nodes: list[fx.Node], consumer: fx.Node, path: list[fx.Node], rule, rewrite: Rewrite,
                       shift: torch.Tensor | None) -> None:
        source = nodes[0].args[0]
        if shift is not None:   # x - nu before the first norm, nu shaped for the norm's input
            name = self._free_name(f"{str(consumer.target).replace('.', '_')}_shift")
            self.gm.register_buffer(name, shift.to(rewrite.module.weight.device))
            with self.gm.graph.inserting_before(nodes[0]):
                source = self.gm.graph.call_function(operator.sub, (source, self.gm.graph.get_attr(name)))
        notes = [f"through {', '.join(what(n, self.label) for n in path)}" if path else "", rewrite.note]
        target = self._place(consumer, rewrite.module, notes)
        self._record(nodes, source, target, rule.name, "forward", notes)

    # ---- surgery -----------------------------------------------------------------------------
    def _place(self, node: fx.Node, module: nn.Module, notes: list[str]) -> str:
        """Install the folded layer for this call site: in place if called once, else a copy; its label."""
        target = str(node.target)
        if self.calls[target] > 1:
            self.calls[target] -= 1
            node.target = self._add_copy(target, module)
            notes.append(f"own copy: {self.label(target)} is called at several sites")
            return self.label(node.target)
        self.gm.set_submodule(target, module, strict=True)
        self.modules[target] = module
        return self.label(target)

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

    def _record(self, nodes: list[fx.Node], value: fx.Node, into: str, rule: str, direction: str,
                notes: list[str]) -> None:
        """Remove the folded ``nodes`` (their uses read ``value``, of the same shape, instead) and report them."""
        chain = tuple(self.names[n] for n in nodes)
        note = "; ".join(n for n in notes if n)
        for n in nodes:   # the last one's values; any one's shape (x.size())
            n.replace_all_uses_with(value)
        for n in reversed(nodes):
            self.gm.graph.erase_node(n)
            self.done.add(n)
        for name in chain:
            self.report.folded.append(Folded(name, into, direction, rule, chain, note))


def _call_key(node: fx.Node) -> tuple[int, ...] | fx.Node | None:
    """What a norm's check depends on besides the module: its input shape, or the node for an odd call."""
    return shape_of(node.args[0]) if len(node.args) == 1 and not node.kwargs else node
