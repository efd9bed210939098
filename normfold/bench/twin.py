"""The norm-free twin: the same network with every foldable norm replaced by identity.

Folding a norm y = A x + c into the conv before it leaves that conv with new
weights and a bias, and no norm op. The twin drops the norm outright: same
convs, same weights, no norm and no extra bias. Nothing faster can come out of
folding, so folded/twin measures how close folding gets to its physical limit
(its outputs are of course different; it is never checked for equivalence).

A norm is foldable when it has a frozen channel map (``inference_affine``
succeeds). Norms whose map depends on each sample (LayerNorm, GroupNorm, ...)
stay in the twin, with the reason, because folding can never remove them.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field

from torch import nn

from ..nn.affine import NotFoldableError, inference_affine, is_norm
from ..nn.bake import bake_weights


@dataclass
class TwinReport:
    replaced: list[str] = field(default_factory=list)
    kept: list[tuple[str, str]] = field(default_factory=list)   # (module name, why it stays)

    def to_dict(self) -> dict:
        return {"replaced": list(self.replaced), "kept": [{"norm": n, "reason": r} for n, r in self.kept]}


def norm_free_twin(model: nn.Module) -> tuple[nn.Module, TwinReport]:
    """A new eval-mode module without foldable norms; ``model`` is not modified."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"norm_free_twin: expected a torch.nn.Module, got {type(model).__name__}")
    twin = bake_weights(copy.deepcopy(model).eval())
    report = TwinReport()
    for name, module in list(twin.named_modules()):
        if not is_norm(module) or any(name.startswith(done + ".") for done in report.replaced):
            continue
        try:
            inference_affine(module)
        except (NotFoldableError, TypeError) as exc:
            report.kept.append((name or type(module).__name__, str(exc)))
            continue
        if not name:
            raise TypeError(f"norm_free_twin: the model itself is a norm layer ({type(model).__name__})")
        parent_name, _, child = name.rpartition(".")
        parent = twin.get_submodule(parent_name) if parent_name else twin
        setattr(parent, child, nn.Identity())
        report.replaced.append(name)
    return twin, report
