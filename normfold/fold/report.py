"""What the fold pass did with each norm layer, and why.

Every norm layer the model holds ends in exactly one list: ``folded`` (into
which layer, in which direction, by which rule) or ``skipped`` (why not).
``warnings`` carries what the user should know about folded layers (training
mode, statistics that were never updated). ``front_end`` says which pass
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

    @property
    def modified(self) -> bool:
        return bool(self.folded)

    def to_dict(self) -> dict:
        return {
            "folded": [dict(asdict(f), chain=list(f.chain)) for f in self.folded],
            "skipped": [asdict(s) for s in self.skipped],
            "warnings": list(self.warnings),
            "front_end": self.front_end,
            "front_end_reason": self.front_end_reason,
            "untraced": dict(self.untraced),
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
        out += [f"untraced {name or '(the model itself)'}: {why}" for name, why in self.untraced.items()]
        out += [f"warning {w}" for w in self.warnings]
        return out
