"""What may lie between a layer and the norm it folds with, in a traced graph.

Real networks rarely wire ``conv -> norm`` directly. These are exact:

* **no-ops**: ``nn.Identity``, dropout (modules in eval mode, or the functional
  form with ``training=False``), ``contiguous``/``clone``.
* **reshapes** (``view``, ``reshape``, ``flatten``, ``unflatten``, ``squeeze``,
  ``unsqueeze``, ``reshape_as``, ``view_as``, ``nn.Flatten``, ``nn.Unflatten``):
  they keep every element's row-major flat index, so the channel an element
  belongs to is the same on both sides when the channel axis keeps its size C
  and the product T of the dims after it (checked by the rules, see
  ``Site.layout``). LeViT's ``Linear -> flatten(0, 1) -> BatchNorm1d`` qualifies.
* **cat** of several layers along the norm's channel axis: layer k holds
  channels ``[s_k, e_k)``, and takes that block of the map when the map has no
  entry across blocks (``algebra.split_channels``).
* **add** of several layers of the same shape (no broadcasting):
  ``A (u + v) + c = (A u + c) + A v``: A into every layer, c into the first.

Each value on the way must feed only the next step (uses of its shape alone,
``x.size()``, ``x.shape``, ``y.reshape_as(x)``, do not count: a fold keeps
shapes). Everything else is refused with its reason.
"""
from __future__ import annotations

import math
import operator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import fx, nn
from torch.nn import functional as F

NO_OP_MODULES = (nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout,
                 nn.FeatureAlphaDropout)
RESHAPE_MODULES = (nn.Flatten, nn.Unflatten)
RESHAPE_METHODS = frozenset({"view", "reshape", "flatten", "unflatten", "squeeze", "unsqueeze", "reshape_as",
                             "view_as", "contiguous", "clone"})
RESHAPE_FUNCTIONS = (torch.flatten, torch.reshape, torch.squeeze, torch.unsqueeze, torch.unflatten)
DROPOUT_FUNCTIONS = (F.dropout, F.dropout1d, F.dropout2d, F.dropout3d, F.alpha_dropout, F.feature_alpha_dropout)
CAT_FUNCTIONS = (torch.cat, torch.concat, torch.concatenate)
ADD_FUNCTIONS = (operator.add, torch.add)
SHAPE_METHODS = frozenset({"size", "dim"})
SHAPE_ATTRS = frozenset({"shape", "ndim", "dtype", "device"})


def _function_in(target: Any, functions: tuple) -> bool:
    return any(target is f for f in functions)


def is_transparent(node: Any, modules: dict[str, nn.Module]) -> bool:
    """A node whose output is its first argument, reshaped at most (see the module docstring)."""
    if not isinstance(node, fx.Node) or not node.args or not isinstance(node.args[0], fx.Node):
        return False
    if node.op == "call_module":
        module = modules.get(str(node.target))
        if type(module) in NO_OP_MODULES:
            return not module.training
        return type(module) in RESHAPE_MODULES
    if node.op == "call_method":
        return node.target in RESHAPE_METHODS
    if node.op == "call_function":
        if _function_in(node.target, RESHAPE_FUNCTIONS):
            return True
        if _function_in(node.target, DROPOUT_FUNCTIONS):
            training = node.kwargs.get("training", node.args[2] if len(node.args) > 2 else True)
            return training is False
    return False


def _shape_only(user: fx.Node, node: fx.Node) -> bool:
    """``user`` reads only the shape of ``node`` (a fold changes values, never shapes)."""
    rest = list(user.args[1:]) + list(user.kwargs.values())
    if user.op == "call_method" and user.target in SHAPE_METHODS:
        return user.args[0] is node and node not in rest
    if user.op == "call_function" and user.target is getattr:
        return user.args[0] is node and user.args[1] in SHAPE_ATTRS
    if user.op == "call_method" and user.target in ("reshape_as", "view_as", "expand_as"):
        return user.args[0] is not node and user.args[1:] == (node,)
    return False


def value_users(node: fx.Node) -> list[fx.Node]:
    """The users of ``node`` that read its values."""
    return [u for u in node.users if not _shape_only(u, node)]


def what(node: Any) -> str:
    """A node as the report names it."""
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


def _feeds_only(node: fx.Node, nxt: fx.Node) -> str | None:
    others = [u for u in value_users(node) if u is not nxt]
    return f"the output of {what(node)} also feeds {', '.join(what(u) for u in others)}" if others else None


def shape_of(node: Any) -> tuple[int, ...] | None:
    if not isinstance(node, fx.Node):
        return None
    val = node.meta.get("val")
    if isinstance(val, torch.Tensor):
        return tuple(int(d) for d in val.shape)
    meta = node.meta.get("tensor_meta")
    return tuple(meta.shape) if hasattr(meta, "shape") else None


def layout_of(shape: tuple[int, ...] | None, axis: int = 1) -> tuple[int, int] | None:
    """(C, T) of ``axis``: its size and the product of the dims after it."""
    if shape is None or len(shape) <= axis:
        return None
    return shape[axis], math.prod(shape[axis + 1:])


@dataclass
class Branch:
    """A layer whose output reaches the norm: through ``path`` (no-ops and reshapes), maybe a cat or add."""

    layer: fx.Node
    path: list[fx.Node]                 # transparent nodes from the layer on, in graph order
    start: int = 0                      # its channels of the norm's map: [start, stop)
    stop: int = 0
    carries_c: bool = True              # whether it takes the map's c (one term of an add does)
    layout: tuple[int, int] | None = None


@dataclass
class Inflow:
    """How the norm's input is made: one layer, or a cat/add of several (``junction``)."""

    branches: list[Branch]
    junction: fx.Node | None = None
    path: list[fx.Node] = field(default_factory=list)   # transparent nodes after the junction/layer
    shared: list[fx.Node] = field(default_factory=list)  # other value users of a single layer

    @property
    def kind(self) -> str:
        """"cat", "add", or "" for a single layer."""
        if self.junction is None:
            return ""
        return "cat" if _function_in(self.junction.target, CAT_FUNCTIONS) else "add"

    def describe(self) -> str:
        steps = [what(n) for n in self.path]
        if self.kind:
            steps.insert(0, f"{self.kind} of {len(self.branches)} layers")
        return f"through {', '.join(steps)}" if steps else ""


def walk_up(node: Any, modules: dict[str, nn.Module]) -> tuple[Any, list[fx.Node]]:
    """(the first node above ``node`` that is not transparent, the transparent nodes in graph order)."""
    path = []
    while is_transparent(node, modules):
        path.append(node)
        node = node.args[0]
    return node, path[::-1]


def walk_down(node: fx.Node, modules: dict[str, nn.Module]) -> tuple[fx.Node, list[fx.Node]] | str:
    """(the single node that consumes ``node``'s values past transparent steps, those steps), or why not."""
    path = []
    while True:
        users = value_users(node)
        if len(users) != 1:
            return f"its output feeds {len(users)} nodes ({', '.join(what(u) for u in users)})"
        user = users[0]
        rest = list(user.args[1:]) + list(user.kwargs.values())
        if not (is_transparent(user, modules) and user.args[0] is node and node not in rest):
            return user, path
        path.append(user)
        node = user


def inflow(norm: fx.Node, modules: dict[str, nn.Module], is_layer) -> Inflow | str:
    """The layers that produce the norm's input, or why there are none to fold into.

    ``is_layer(module)``: whether a fold rule takes this module.
    """
    source = norm.args[0]
    top, path = walk_up(source, modules)
    for node, nxt in zip(path, path[1:] + [norm]):
        why = _feeds_only(node, nxt)
        if why is not None:
            return why
    first = path[0] if path else norm
    norm_layout = layout_of(shape_of(source))
    if _is_layer(top, modules, is_layer):
        shared = [u for u in value_users(top) if u is not first]
        return Inflow([Branch(top, [], 0, norm_layout[0] if norm_layout else 0, True, norm_layout)],
                      path=path, shared=shared)
    is_cat = isinstance(top, fx.Node) and top.op == "call_function" and _function_in(top.target, CAT_FUNCTIONS)
    if is_cat or _is_add(top):
        why = _feeds_only(top, first)
        if why is not None:
            return why
        junction = (_cat if is_cat else _add)(top, modules, is_layer, norm_layout)
    else:
        through = f" (through {', '.join(what(n) for n in path)})" if path else ""
        if isinstance(top, fx.Node) and top.op == "call_module":
            return (f"its input comes from {top.target} ({type(modules[str(top.target)]).__name__}){through}, "
                    "not a Conv/ConvTranspose/Linear")
        return f"its input is {what(top)}{through}, not the output of a Conv/ConvTranspose/Linear"
    if isinstance(junction, str):
        return junction
    return Inflow(junction, junction=top, path=path)


def _is_layer(node: Any, modules, is_layer) -> bool:
    return isinstance(node, fx.Node) and node.op == "call_module" and is_layer(modules[str(node.target)])


def _is_add(node: Any) -> bool:
    if not isinstance(node, fx.Node) or "alpha" in node.kwargs or len(node.args) != 2:
        return False
    return (node.op == "call_function" and _function_in(node.target, ADD_FUNCTIONS)) or (
        node.op == "call_method" and node.target == "add")


def _operand(node: Any, junction: fx.Node, modules, is_layer) -> tuple[fx.Node, list[fx.Node]] | str:
    """The layer feeding one operand of a cat/add (through transparent nodes), or why not."""
    if not isinstance(node, fx.Node):
        return f"{what(junction)} has the constant operand {node!r}"
    layer, path = walk_up(node, modules)
    if not _is_layer(layer, modules, is_layer):
        return f"its input is {what(junction)}, whose operand {what(layer)} is not the output of a Conv/ConvTranspose/Linear"
    for n, nxt in zip([layer] + path, path + [junction]):
        why = _feeds_only(n, nxt)
        if why is not None:
            return why
    return layer, path


def _cat(cat: fx.Node, modules, is_layer, norm_layout) -> list[Branch] | str:
    parts = cat.args[0] if cat.args else cat.kwargs.get("tensors")
    dim = cat.args[1] if len(cat.args) > 1 else cat.kwargs.get("dim", 0)
    shape = shape_of(cat)
    if not isinstance(parts, (list, tuple)) or shape is None or not isinstance(dim, int):
        return f"the shapes around {what(cat)} are unknown"
    dim %= len(shape)
    if layout_of(shape, dim) != norm_layout:
        return (f"{what(cat)} joins axis {dim} of {shape}, which is not the norm's channel axis "
                f"({norm_layout[0] if norm_layout else '?'} channels)")
    if len({id(p) for p in parts}) != len(parts):
        return f"{what(cat)} takes the same value twice"
    branches, start = [], 0
    for part in parts:
        found = _operand(part, cat, modules, is_layer)
        if isinstance(found, str):
            return found
        size = shape_of(part)
        if size is None:
            return f"the shapes around {what(cat)} are unknown"
        layout = layout_of(size, dim)
        branches.append(Branch(found[0], found[1], start, start + layout[0], True, layout))
        start += layout[0]
    return branches


def _add(add: fx.Node, modules, is_layer, norm_layout) -> list[Branch] | str:
    shape = shape_of(add)
    terms, stack = [], [(node, add) for node in add.args]
    while stack:   # flatten nested adds whose sum feeds only the next add
        node, parent = stack.pop(0)
        if isinstance(node, fx.Node) and shape_of(node) != shape:
            return f"{what(parent)} broadcasts {what(node)} of shape {shape_of(node)} to {shape}"
        if _is_add(node) and value_users(node) == [parent]:
            stack[:0] = [(n, node) for n in node.args]
            continue
        terms.append((node, parent))
    branches = []
    for k, (term, parent) in enumerate(terms):
        found = _operand(term, parent, modules, is_layer)
        if isinstance(found, str):
            return found
        branches.append(Branch(found[0], found[1], 0, norm_layout[0] if norm_layout else 0, k == 0, norm_layout))
    if len({id(b.layer) for b in branches}) != len(branches):
        return f"{what(add)} adds the same value twice"
    return branches
