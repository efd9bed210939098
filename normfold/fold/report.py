"""What the fold pass did with each norm layer, and why."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass(frozen=True)
class Folded:
    norm: str          # module name of the norm layer
    into: str          # module name of the Conv/Linear that absorbed it
    direction: str = "backward"   # "backward": into the producer before the norm


@dataclass(frozen=True)
class Skipped:
    norm: str
    reason: str


@dataclass
class FoldReport:
    folded: list[Folded] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)

    @property
    def modified(self) -> bool:
        return bool(self.folded)

    def to_dict(self) -> dict:
        return {
            "folded": [asdict(f) for f in self.folded],
            "skipped": [asdict(s) for s in self.skipped],
        }

    def lines(self) -> list[str]:
        """One human-readable line per norm layer."""
        out = [f"folded  {f.norm} -> {f.into} ({f.direction})" for f in self.folded]
        out += [f"skipped {s.norm}: {s.reason}" for s in self.skipped]
        return out
