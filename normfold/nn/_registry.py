"""Registries keyed by a module class or its dotted name, matched along the class hierarchy.

A key is an ``nn.Module`` subclass, or "package.module.ClassName" for a class
normfold does not import (torchvision's, detectron2's, timm's). A module
matches the entry of the nearest class in its MRO, by class or by name.
"""
from __future__ import annotations

from typing import TypeVar

from torch import nn

V = TypeVar("V")


def key_label(module_type: type | str, what: str) -> str:
    """Validate a registry key; its label for messages. ``what`` names the registering function."""
    if isinstance(module_type, str):
        if "." not in module_type:
            raise TypeError(f"{what}: {module_type!r} is not a dotted class name (package.module.Class)")
        return module_type
    if isinstance(module_type, type) and issubclass(module_type, nn.Module):
        return module_type.__name__
    raise TypeError(f"{what}: expected an nn.Module subclass or its dotted name, got {module_type!r}")


def dotted_name(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def lookup(registry: dict[type | str, V], module: nn.Module) -> tuple[type | str, V] | None:
    """(key, value) of the entry nearest to ``type(module)`` in its MRO, or None."""
    for cls in type(module).__mro__:
        for key in (cls, dotted_name(cls)):
            if key in registry:
                return key, registry[key]
    return None
