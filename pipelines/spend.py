"""What a stage spends and what an artifact guarantees: the ledger's vocabulary (a leaf module)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from privacy.composition import GaussianSteps, Guarantee, Mechanism, Opaque, Parallel, RDPCurve

__all__ = ["ADD_REMOVE", "DEFAULT_DATASET", "POST_PROCESSING", "Guarantee", "Spend"]

KINDS = ("dp", "none", "post-processing")
LINEAGES = ("new", "continue", "keep")
DEFAULT_DATASET = "members"
# The neighbour relation a "dp" spend's (ε, δ) holds under. Every privcomp mechanism is accounted
# under add/remove one record (Opacus's accountants; train-fl's client mode converts to it); a
# replace-one guarantee is a different claim (replace-one = two add/remove steps), so the ledger
# refuses to compose spends of different relations rather than mix them.
ADD_REMOVE = "add/remove"
NEIGHBOUR_RELATIONS = (ADD_REMOVE, "replace-one")


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

    neighbours: the relation of a "dp" spend's guarantee (NEIGHBOUR_RELATIONS).
    """

    kind: str
    epsilon: float | None = None
    delta: float | None = None
    dataset: str = DEFAULT_DATASET
    lineage: str = "new"
    details: dict[str, Any] = field(default_factory=dict)
    neighbours: str = ADD_REMOVE

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown spend kind '{self.kind}' (known: {', '.join(KINDS)})")
        if self.lineage not in LINEAGES:
            raise ValueError(f"unknown lineage '{self.lineage}' (known: {', '.join(LINEAGES)})")
        if self.neighbours not in NEIGHBOUR_RELATIONS:
            known = ", ".join(NEIGHBOUR_RELATIONS)
            raise ValueError(f"unknown neighbour relation '{self.neighbours}' (known: {known})")
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
            "neighbours": self.neighbours,
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
            # Older run dirs did not write it: every spend privcomp recorded then was add/remove.
            neighbours=str(data.get("neighbours", ADD_REMOVE)),
        )


POST_PROCESSING = Spend(kind="post-processing", lineage="keep")
