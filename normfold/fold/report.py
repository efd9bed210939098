"""What the fold pass did with each norm layer, and why.

Every norm layer the model holds ends in exactly one list: ``folded`` (into
which layer, in which direction, by which rule) or ``skipped`` (why not).
``tidied`` holds what the ONNX pass removed without any layer, because its map
is exactly ``y = x`` (a Mul by 1, an Add of 0): tidying, not a norm folded, so
it counts in neither of the two (the torch pass has none).
``warnings`` carries what the user should know about folded layers (training
mode, statistics that were never updated, a graph that is already quantized).
``added_bytes``: what the folded model stores more than the original, the
copies of weights that several layers share (each layer that takes a fold gets
its own; the ONNX pass, ``fold/onnx/copies.py``). ``front_end`` says which pass
produced the report ("torch.fx" or "onnx") and why, when it was not the first
choice; ``untraced`` names each part of a PyTorch model that torch.fx could not
trace (``""`` for the model's own forward), with the call that failed.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass(frozen=True)
class Folded:
    norm: str          # module name of the norm layer ("name[call k]" for a norm called at several sites)
    into: str          # module name of the Conv/Linear that absorbed it (in the folded model)
    direction: str = "backward"   # "backward": into the layer before the norm; "forward": after it
    rule: str = ""
    chain: tuple[str, ...] = ()   # every norm folded together with this one, in order
    note: str = ""                # e.g. "copy for call site 2", "zero padding: input shift x - nu"


@dataclass(frozen=True)
class Skipped:
    norm: str
    reason: str


@dataclass
class FoldReport:
    folded: list[Folded] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    front_end: str = "torch.fx"
    front_end_reason: str = ""
    untraced: dict[str, str] = field(default_factory=dict)
    added_bytes: int = 0
    tidied: list[Folded] = field(default_factory=list)

    @property
    def modified(self) -> bool:
        return bool(self.folded or self.tidied)

    def to_dict(self) -> dict:
        return {
            "folded": [dict(asdict(f), chain=list(f.chain)) for f in self.folded],
            "skipped": [asdict(s) for s in self.skipped],
            "warnings": list(self.warnings),
            "front_end": self.front_end,
            "front_end_reason": self.front_end_reason,
            "untraced": dict(self.untraced),
            "added_bytes": self.added_bytes,
            "tidied": [dict(asdict(f), chain=list(f.chain)) for f in self.tidied],
        }

    def lines(self) -> list[str]:
        """One human-readable line per norm layer, then the warnings."""
        out = []
        for f in self.folded:
            extra = [f.rule] if f.rule else []
            if len(f.chain) > 1:
                extra.append("chain " + " -> ".join(f.chain))
            if f.note:
                extra.append(f.note)
            out.append(f"folded  {f.norm} -> {f.into} ({f.direction}{'; ' if extra else ''}{'; '.join(extra)})")
        out += [f"skipped {s.norm}: {s.reason}" for s in self.skipped]
        out += [f"tidied  {f.norm}: {f.note}" for f in self.tidied]
        out += [f"untraced {name or '(the model itself)'}: {why}" for name, why in self.untraced.items()]
        if self.added_bytes:
            out.append(f"added   {self.added_bytes} bytes: the folded copies of shared weights (see the folds' notes)")
        out += [f"warning {w}" for w in self.warnings]
        return out
