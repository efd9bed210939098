"""Split composite modules (a norm followed by parts of its own) in a traced graph.

A call of a composite (timm's ``BatchNormAct2d``: batch norm, drop, act) is
replaced by calls of its parts, ``path.norm -> path.drop -> path.act``, once the
probe has confirmed in float64 that the parts compute the module's own forward
at every call site's shape. The norm then folds like any other; the parts stay
in place. A composite whose norm folds nowhere is put back whole.

The check runs once per shape the composite is called with; its norm's map
comes with the split (the probe has checked it with the parts).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from torch import fx, nn

from ...nn.affine import inference_affine, not_foldable_reason
from ...nn.composite import SplitError, is_composite, split
from ...nn.statistics import statistics_problem
from ..algebra import ChannelMap
from .between import Label, shape_of
from .probe import same_reason
from .trace import describe


@dataclass
class Split:
    target: str                 # the composite's module path
    original: nn.Module
    map: ChannelMap             # its norm part's, checked with the parts against its forward
    sites: list[list[fx.Node]] = field(default_factory=list)   # per call: the norm node, then its parts

    @property
    def norm_target(self) -> str:
        return f"{self.target}.norm"


def split_composites(gm: fx.GraphModule, nodes: list[fx.Node], label: Label) -> tuple[list[Split], dict[fx.Node, str]]:
    """Split every composite called by ``nodes`` whose parts check out; the reason for the others.

    ``label`` names modules in a reason.
    """
    calls: dict[str, list[fx.Node]] = {}
    for node in nodes:
        if node.op == "call_module":
            calls.setdefault(str(node.target), []).append(node)
    done, refused = [], {}
    for target, sites in calls.items():
        module = gm.get_submodule(target)
        if not is_composite(module) or not_foldable_reason(module) is not None:
            continue
        parts = _confirmed_parts(module, sites, label)
        if isinstance(parts, str):
            refused.update(dict.fromkeys(sites, parts))
            continue
        done.append(_install(gm, target, module, *parts, sites))
    return done, refused


def _confirmed_parts(module: nn.Module, sites: list[fx.Node], label: Label) -> tuple[nn.Sequential, ChannelMap] | str:
    try:
        parts = split(module)
    except SplitError as exc:
        return str(exc)
    if (why := statistics_problem(parts.norm)) is not None:  # named, before a probe would see only NaN
        return why
    try:
        m = ChannelMap.of(*inference_affine(parts.norm))
    except Exception as exc:  # the splitter built a norm without a map
        return f"the norm split from {type(module).__name__} has no map: {describe(exc)}"
    for node in sites:
        if len(node.args) != 1 or node.kwargs:
            return (f"{label(str(node.target))} is called with {len(node.args)} arguments and "
                    f"{len(node.kwargs)} keywords")
    for shape in dict.fromkeys(shape_of(node.args[0]) for node in sites):   # each shape once
        why = same_reason(module, parts, m, shape)
        if why is not None:
            return why
    return parts, m


def _install(gm: fx.GraphModule, target: str, module: nn.Module, parts: nn.Sequential, m: ChannelMap, sites) -> Split:
    gm.set_submodule(target, parts, strict=True)
    done = Split(target, module, m)
    for node in sites:
        chain, value = [], node.args[0]
        with gm.graph.inserting_before(node):
            for name in parts._modules:
                value = gm.graph.call_module(f"{target}.{name}", (value,))
                value.meta = dict(node.meta)
                chain.append(value)
        node.replace_all_uses_with(value)
        gm.graph.erase_node(node)
        done.sites.append(chain)
    return done


def restore_unfolded(gm: fx.GraphModule, splits: list[Split], folded: set[fx.Node]) -> None:
    """Put back whole every composite none of whose norm calls folded."""
    for s in splits:
        if any(chain[0] in folded for chain in s.sites):
            continue
        gm.set_submodule(s.target, s.original, strict=True)
        for chain in s.sites:
            with gm.graph.inserting_before(chain[0]):
                whole = gm.graph.call_module(s.target, chain[0].args)
            whole.meta = dict(chain[-1].meta)
            chain[-1].replace_all_uses_with(whole)
            for node in reversed(chain):
                gm.graph.erase_node(node)
