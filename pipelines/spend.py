"""What a stage spends and what an artifact guarantees: the ledger's vocabulary (a leaf module)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from privacy.composition import GaussianSteps, Guarantee, Mechanism, Opaque, Parallel, RDPCurve

__all__ = ["DEFAULT_DATASET", "POST_PROCESSING", "Guarantee", "Spend"]

KINDS = ("dp", "none", "post-processing")
LINEAGES = ("new", "continue", "keep")
DEFAULT_DATASET = "members"


@dataclass(frozen=True)
class Spend:
    """What a stage did to the privacy of the artifact it produced.

    kind "dp": a DP mechanism on the private split `dataset`, with its accounted (ε, δ); its
    history entry (noise_multiplier, sample_rate, steps, accountant; or rdp_orders and rdp) is in
    `details`, typed by `mechanism`.
    kind "none": read private data without DP: the artifact is not private (ε None).
    kind "post-processing": no private data touched; the input's guarantee carries over.

    lineage "new": the artifact starts a lineage (trained from scratch); "continue": it extends
    its input's (a DP fine-tune, a calibration on the members); "keep": post-processing.
    """

    kind: str
    epsilon: float | None = None
    delta: float | None = None
    dataset: str = DEFAULT_DATASET
    lineage: str = "new"
    details: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown spend kind '{self.kind}' (known: {', '.join(KINDS)})")
        if self.lineage not in LINEAGES:
            raise ValueError(f"unknown lineage '{self.lineage}' (known: {', '.join(LINEAGES)})")
        if (self.kind == "post-processing") != (self.lineage == "keep"):
            raise ValueError(
                "post-processing keeps its input's lineage; a read of the members "
                "starts a new one or continues it"
            )

    @property
    def mechanism(self) -> Mechanism:
        """The history entry of a "dp" spend, what the ledger composes: its RDP curve when the
        details carry one (`rdp_orders`, `rdp`), else GaussianSteps when they say σ, q and
        steps, else its (ε, δ).

        Federated training (train-fl): `client_steps` (record mode) makes it Parallel, one
        branch (σ, q, steps of client k) per client; client mode carries its record-level RDP
        curve (its σ, q and steps bound the add/remove-client relation only)."""
        d = self.details
        if "client_steps" in d:
            sigma, q = float(d["noise_multiplier"]), float(d["sample_rate"])
            return Parallel(
                tuple(
                    (GaussianSteps(sigma, q, int(s)),) if int(s) > 0 else ()
                    for s in d["client_steps"]
                )
            )
        if "rdp" in d and "rdp_orders" in d:
            orders = tuple(float(a) for a in d["rdp_orders"])
            # JSON has no infinity: an order where the curve is unbounded is stored as null.
            return RDPCurve(orders, tuple(math.inf if r is None else float(r) for r in d["rdp"]))
        if all(k in d for k in ("noise_multiplier", "sample_rate", "steps")):
            q = float(d["sample_rate"])
            return GaussianSteps(float(d["noise_multiplier"]), q, int(d["steps"]))
        if self.epsilon is None or self.delta is None:
            raise ValueError("a 'dp' spend needs (noise_multiplier, sample_rate, steps) or (ε, δ)")
        return Opaque(float(self.epsilon), float(self.delta))

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "epsilon": self.epsilon,
            "delta": self.delta,
            "dataset": self.dataset,
            "lineage": self.lineage,
            "details": self.details,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Spend:
        details = dict(data.get("details", {}))
        kind = str(data["kind"])
        lineage = "keep" if kind == "post-processing" else "new"
        return cls(
            kind=kind,
            epsilon=data.get("epsilon"),
            delta=data.get("delta"),
            # Run dirs of 0.1.0 kept both in the details.
            dataset=str(data.get("dataset", details.get("dataset", DEFAULT_DATASET))),
            lineage=str(data.get("lineage", details.get("lineage", lineage))),
            details=details,
        )


POST_PROCESSING = Spend(kind="post-processing", lineage="keep")
