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
from typing import Any, Callable

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


Label = Callable[[str], str]
"""A module's path in the traced graph -> the name the report gives it (``""``: the traced module itself)."""


def what(node: Any, label: Label) -> str:
    """A node as the report names it (modules by ``label``)."""
    if not isinstance(node, fx.Node):
        return repr(node)
    if node.op == "call_module":
        return label(str(node.target))
    part = label("")
    if node.op == "placeholder":
        return f"the input {node.name!r} of part {part}" if part else f"the model input {node.name!r}"
    if node.op == "output":
        return f"the output of part {part}" if part else "the model output"
    target = getattr(node.target, "__name__", str(node.target))
    return f"{node.name} ({target})"


def _feeds_only(node: fx.Node, nxt: fx.Node, label: Label) -> str | None:
    others = [u for u in value_users(node) if u is not nxt]
    if not others:
        return None
    return f"the output of {what(node, label)} also feeds {', '.join(what(u, label) for u in others)}"


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


@dataclass(frozen=True)
class Branch:
    """A layer whose output reaches the norm (through no-ops and reshapes, maybe a cat or add).

    ``layout``: (C, T) of the layer's output on the norm's channel axis; in a
    cat, C is the number of channels of the map the layer takes.
    """

    layer: fx.Node
    layout: tuple[int, int] | None


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

    def describe(self, label: Label) -> str:
        steps = [what(n, label) for n in self.path]
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


def walk_down(node: fx.Node, modules: dict[str, nn.Module], label: Label) -> tuple[fx.Node, list[fx.Node]] | str:
    """(the single node that consumes ``node``'s values past transparent steps, those steps), or why not."""
    path = []
    while True:
        users = value_users(node)
        if len(users) != 1:
            return f"its output feeds {len(users)} nodes ({', '.join(what(u, label) for u in users)})"
        user = users[0]
        rest = list(user.args[1:]) + list(user.kwargs.values())
        if not (is_transparent(user, modules) and user.args[0] is node and node not in rest):
            return user, path
        path.append(user)
        node = user


def inflow(norm: fx.Node, modules: dict[str, nn.Module], is_layer, label: Label) -> Inflow | str:
    """The layers that produce the norm's input, or why there are none to fold into.

    ``is_layer(module)``: whether a fold rule takes this module; ``label``
    names modules in the reason.
    """
    source = norm.args[0]
    top, path = walk_up(source, modules)
    for node, nxt in zip(path, path[1:] + [norm]):
        why = _feeds_only(node, nxt, label)
        if why is not None:
            return why
    first = path[0] if path else norm
    norm_layout = layout_of(shape_of(source))
    if _is_layer(top, modules, is_layer):
        shared = [u for u in value_users(top) if u is not first]
        return Inflow([Branch(top, norm_layout)], path=path, shared=shared)
    is_cat = isinstance(top, fx.Node) and top.op == "call_function" and _function_in(top.target, CAT_FUNCTIONS)
    if is_cat or _is_add(top):
        why = _feeds_only(top, first, label)
        if why is not None:
            return why
        junction = (_cat if is_cat else _add)(top, modules, is_layer, norm_layout, label)
    else:
        through = f" (through {', '.join(what(n, label) for n in path)})" if path else ""
        if isinstance(top, fx.Node) and top.op == "call_module":
            return (f"its input comes from {label(str(top.target))} ({type(modules[str(top.target)]).__name__})"
                    f"{through}, not a Conv/ConvTranspose/Linear")
        return f"its input is {what(top, label)}{through}, not the output of a Conv/ConvTranspose/Linear"
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


def _operand(node: Any, junction: fx.Node, modules, is_layer, label: Label) -> fx.Node | str:
    """The layer feeding one operand of a cat/add (through transparent nodes), or why not."""
    if not isinstance(node, fx.Node):
        return f"{what(junction, label)} has the constant operand {node!r}"
    layer, path = walk_up(node, modules)
    if not _is_layer(layer, modules, is_layer):
        return (f"its input is {what(junction, label)}, whose operand {what(layer, label)} is not the output of a "
                "Conv/ConvTranspose/Linear")
    for n, nxt in zip([layer] + path, path + [junction]):
        why = _feeds_only(n, nxt, label)
        if why is not None:
            return why
    return layer


def _cat(cat: fx.Node, modules, is_layer, norm_layout, label: Label) -> list[Branch] | str:
    parts = cat.args[0] if cat.args else cat.kwargs.get("tensors")
    dim = cat.args[1] if len(cat.args) > 1 else cat.kwargs.get("dim", 0)
    shape = shape_of(cat)
    if not isinstance(parts, (list, tuple)) or shape is None or not isinstance(dim, int):
        return f"the shapes around {what(cat, label)} are unknown"
    dim %= len(shape)
    if layout_of(shape, dim) != norm_layout:
        return (f"{what(cat, label)} joins axis {dim} of {shape}, which is not the norm's channel axis "
                f"({norm_layout[0] if norm_layout else '?'} channels)")
    if len({id(p) for p in parts}) != len(parts):
        return f"{what(cat, label)} takes the same value twice"
    branches = []
    for part in parts:
        found = _operand(part, cat, modules, is_layer, label)
        if isinstance(found, str):
            return found
        size = shape_of(part)
        if size is None:
            return f"the shapes around {what(cat, label)} are unknown"
        branches.append(Branch(found, layout_of(size, dim)))
    return branches


def _add(add: fx.Node, modules, is_layer, norm_layout, label: Label) -> list[Branch] | str:
    shape = shape_of(add)
    terms, stack = [], [(node, add) for node in add.args]
    while stack:   # flatten nested adds whose sum feeds only the next add
        node, parent = stack.pop(0)
        if isinstance(node, fx.Node) and shape_of(node) != shape:
            return f"{what(parent, label)} broadcasts {what(node, label)} of shape {shape_of(node)} to {shape}"
        if _is_add(node) and value_users(node) == [parent]:
            stack[:0] = [(n, node) for n in node.args]
            continue
        terms.append((node, parent))
    branches = []
    for term, parent in terms:
        found = _operand(term, parent, modules, is_layer, label)
        if isinstance(found, str):
            return found
        branches.append(Branch(found, norm_layout))
    if len({id(b.layer) for b in branches}) != len(branches):
        return f"{what(add, label)} adds the same value twice"
    return branches
