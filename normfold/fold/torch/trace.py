"""Trace a model with torch.fx, keeping every norm layer as one node.

Norm layers are leaves (one ``call_module`` node each, whatever package they
come from), and so are subclasses of Conv/ConvTranspose/Linear (fx would
otherwise trace into their forward and leave a bare ``conv2d`` call that no
rule can fold into). When a submodule cannot be traced (data-dependent control flow,
an unsupported call), it becomes a leaf too and tracing is retried: the rest of
the model still folds, and the fold pass then works inside that submodule
(see ``parts.py``). When the top-level forward itself cannot be traced,
:class:`UntraceableError` names the call (file, line, source) that failed.

A *call* fixes the arguments the forward is traced with (name -> value, from
an example call): tensors become placeholders, lists/tuples/dicts of tensors
are indexed from a placeholder of the same name, and ``None``/bool/str values
are specialised, each guarded by a check that raises when the traced module is
later called with another structure or value. Without a call, fx's own
placeholders are used (every parameter a tensor).
"""
from __future__ import annotations

import inspect
import os
import traceback
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import fx, nn

from ..._messages import typed_line
from ...nn.affine import is_norm
from ..errors import FoldError
from .rules._base import is_subclass

_TORCH_DIR = os.path.dirname(torch.__file__) + os.sep   # with the separator: torchvision's files are not torch's
_CONSTANTS = (type(None), bool, str)


class UntraceableError(FoldError):
    """torch.fx cannot trace the module's own forward; ``call`` is the failing call."""

    def __init__(self, message: str, call: str):
        super().__init__(message)
        self.call = call


@dataclass
class Traced:
    graph_module: fx.GraphModule
    opaque: dict[str, str] = field(default_factory=dict)   # submodule -> why it was kept whole


class _Tracer(fx.Tracer):
    def __init__(self, opaque: set[str], call: dict[str, Any] | None):
        super().__init__()
        self.opaque, self.call = opaque, call
        self.stack: list[str] = []
        self.failed_in: str | None = None

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return (is_norm(m) or qualname in self.opaque or _layer_subclass(m)
                or super().is_leaf_module(m, qualname))

    def call_module(self, m, forward, args, kwargs):
        name = self.path_of_module(m)
        self.stack.append(name)
        try:
            return super().call_module(m, forward, args, kwargs)
        except Exception:
            if self.failed_in is None:
                self.failed_in = next((s for s in reversed(self.stack) if s), None)
            raise
        finally:
            self.stack.pop()

    def create_args_for_root(self, root_fn, is_module, concrete_args=None):
        if self.call is None:
            return super().create_args_for_root(root_fn, is_module, concrete_args)
        params = list(inspect.signature(root_fn).parameters.values())[1:]  # without self
        args: list[Any] = [self.root]
        for p in params:
            default = () if p.default is inspect.Parameter.empty else (p.default,)
            proxy = self.create_proxy("placeholder", p.name, default, {})
            value = self.call[p.name]
            if not isinstance(value, torch.Tensor):
                self.create_proxy("call_function", check_structure, (proxy, p.name, structure(value)), {})
            args.append(_rebuild(value, proxy))
        return root_fn, args


def _layer_subclass(m: nn.Module) -> bool:
    """A subclass of Conv/ConvTranspose/Linear with no norm inside: one node, so a norm next to it can fold
    into it (where its fold is checked against its forward, ``layer_check.py``) rather than into nothing."""
    return is_subclass(m) and not any(is_norm(s) for s in m.modules())


def structure(value: Any) -> Any:
    """A repr-able description of a call argument: "tensor", a constant, or a container of them."""
    if isinstance(value, torch.Tensor):
        return "tensor"
    if isinstance(value, (list, tuple)):
        return (type(value).__name__, tuple(structure(v) for v in value))
    if isinstance(value, dict):
        return ("dict", tuple((k, structure(v)) for k, v in value.items()))
    return ("const", value)


def check_structure(value: Any, name: str, expected: Any) -> None:
    """The guard of a specialised argument: raise when ``value`` is not shaped like the traced one."""
    got = structure(value)
    if got != expected:
        raise TypeError(f"argument {name!r} was traced as {expected!r}; this call passes {got!r}")


def call_problem(value: Any, name: str) -> str | None:
    """Why a call argument cannot be traced with a guard, or None."""
    if isinstance(value, torch.Tensor) or type(value) in _CONSTANTS:
        return None
    if isinstance(value, (list, tuple)) and type(value) in (list, tuple):
        return next((p for v in value if (p := call_problem(v, name))), None)
    if type(value) in (dict, OrderedDict):
        bad = next((k for k in value if type(k) not in (str, int)), None)
        if bad is not None:
            return f"argument {name!r} is a dict keyed by {type(bad).__name__}"
        return next((p for v in value.values() if (p := call_problem(v, name))), None)
    return f"argument {name!r} holds a {type(value).__name__}, not tensors (or lists/dicts of them, None, bool, str)"


def _rebuild(value: Any, proxy: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return proxy
    if isinstance(value, (list, tuple)):
        return type(value)(_rebuild(v, proxy[i]) for i, v in enumerate(value))
    if isinstance(value, dict):
        return type(value)((k, _rebuild(v, proxy[k])) for k, v in value.items())
    return value


def bind_call(module: nn.Module, args: tuple, kwargs: dict | None = None) -> dict[str, Any] | str:
    """The forward's arguments by name (defaults filled in), or why they cannot be traced."""
    try:
        sig = inspect.signature(module.forward)
    except (TypeError, ValueError) as exc:
        return f"its forward has no signature: {exc}"
    if any(p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) for p in sig.parameters.values()):
        return "its forward takes *args or **kwargs"
    try:
        bound = sig.bind(*args, **(kwargs or {}))
    except TypeError as exc:
        return f"its forward does not accept the call: {exc}"
    bound.apply_defaults()
    for name, value in bound.arguments.items():
        why = call_problem(value, name)
        if why is not None:
            return why
    return dict(bound.arguments)


def failing_call(exc: BaseException, outside: tuple[str, ...] = (_TORCH_DIR,)) -> str:
    """'file:line in fn: source' of the innermost frame outside torch (outside every path in ``outside``), or ''."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if not f.filename.startswith(outside)]
    if not frames:
        return ""
    f = frames[-1]
    return f"{os.path.basename(f.filename)}:{f.lineno} in {f.name}: {(f.line or '').strip()}"


def describe(exc: BaseException) -> str:
    where = failing_call(exc)
    what = typed_line(exc)
    return f"{what} (at {where})" if where else what


def trace(model: nn.Module, call: dict[str, Any] | None = None, max_retries: int = 32) -> Traced:
    """fx-trace ``model`` (with ``call``'s arguments, see the module docstring).

    Submodules fx cannot trace are kept whole; raises UntraceableError when the
    model's own forward cannot be traced.
    """
    opaque: dict[str, str] = {}
    for _ in range(max_retries):
        tracer = _Tracer(set(opaque), call)
        try:
            graph = tracer.trace(model)
        except Exception as exc:  # fx raises many types; the message is what matters
            if tracer.failed_in and tracer.failed_in not in opaque:
                opaque[tracer.failed_in] = describe(exc)
                continue
            why = describe(exc)
            raise UntraceableError(f"torch.fx could not trace {type(model).__name__}.forward: {why}", why) from exc
        return Traced(fx.GraphModule(model, graph, class_name=type(model).__name__), opaque)
    why = f"more than {max_retries} untraceable submodules"
    raise UntraceableError(f"torch.fx could not trace {type(model).__name__}: {why}", why)
