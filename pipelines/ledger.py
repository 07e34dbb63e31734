"""Privacy ledger: what each stage spent, and the guarantee of the artifact it produced.

A training stage starts a new artifact lineage; post-processing stages inherit their input's
(epsilon, delta). The run's total composes every DP spend on the private data with basic
composition (epsilon and delta add), which is a valid, if loose, upper bound; a stage that read
private data without DP makes the total "not private" (epsilon None).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from pipelines.stage import Spend


@dataclass(frozen=True)
class Guarantee:
    epsilon: float | None  # None: not private (infinite)
    delta: float | None


@dataclass
class Ledger:
    entries: list[dict[str, Any]] = field(default_factory=list)
    current: Guarantee | None = None  # guarantee of the latest artifact

    def record(self, stage: str, spend: Spend) -> Guarantee:
        if spend.kind == "dp":
            self.current = Guarantee(spend.epsilon, spend.delta)
        elif spend.kind == "none":
            self.current = Guarantee(None, None)
        elif self.current is None:
            raise ValueError(f"stage '{stage}' post-processes an artifact that no stage produced")
        self.entries.append(
            {"stage": stage, "kind": spend.kind, **asdict(self.current), **spend.details}
        )
        return self.current

    def total(self) -> Guarantee:
        kinds = [e["kind"] for e in self.entries]
        if "none" in kinds:
            return Guarantee(None, None)
        spends = [e for e in self.entries if e["kind"] == "dp"]
        if not spends:
            return Guarantee(0.0, 0.0)
        return Guarantee(sum(e["epsilon"] for e in spends), sum(e["delta"] for e in spends))

    def to_dict(self) -> dict[str, Any]:
        return {"stages": self.entries, "total": asdict(self.total())}
