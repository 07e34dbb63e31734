"""What the auditor concludes from one artifact's attacks: the strongest attack at each FPR of
the fixed family, with its TPR interval corrected for having been picked out of the attacks run,
and the DP-bound consistency check (attacks.consistency). On the evaluation pair, and on the
canaries alone where the run has them (each its own family). The summary table and the report
read these, never an uncorrected maximum."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from attacks.consistency import FPR_GRID, bound_violations, strongest_attack
from attacks.metrics import RocCurve
from pipelines.errors import PrivcompError

CANARIES = "canaries"
POPULATIONS = ("population", CANARIES)
HEADLINE_FPR = 0.01  # attack power in tables and sweeps: TPR at 1% FPR (0.1% is noise at n=500)


def _roc(curve: dict[str, Any]) -> RocCurve:
    return RocCurve(fpr=np.asarray(curve["fpr"], float), tpr=np.asarray(curve["tpr"], float))


def _population(attacks: dict[str, Any], roc: dict[str, Any], canaries: bool) -> dict[str, Any]:
    """ROC curves and sample sizes of one population (the pair, or the canaries alone)."""
    rocs, sizes = {}, set()
    for name, metrics in attacks.items():
        source = metrics.get(CANARIES) if canaries else metrics
        curve = roc.get(name, {}).get(CANARIES) if canaries else roc.get(name)
        if source and curve:
            rocs[name] = _roc(curve)
            sizes.add((int(source["n_members"]), int(source["n_nonmembers"])))
    if len(sizes) > 1:
        raise PrivcompError(f"the attacks of one artifact were measured on different pairs {sizes}")
    n_members, n_nonmembers = sizes.pop() if sizes else (0, 0)
    return {"rocs": rocs, "n_members": n_members, "n_nonmembers": n_nonmembers}


def findings(
    attacks: dict[str, Any], roc: dict[str, Any], epsilon: float | None, delta: float | None
) -> dict[str, Any]:
    """Per population: sizes, the strongest attack per FPR of the family, and the DP-bound
    check's violations (none to check where ε is null: not private)."""
    out: dict[str, Any] = {}
    private = epsilon is not None and math.isfinite(epsilon)
    for population in POPULATIONS:
        found = _population(attacks, roc, canaries=population == CANARIES)
        if not found["rocs"]:
            continue
        sizes = {"n_members": found["n_members"], "n_nonmembers": found["n_nonmembers"]}
        strongest = {
            str(point): s.to_dict()
            for point in FPR_GRID
            if (s := strongest_attack(found["rocs"], fpr_point=point, **sizes)) is not None
        }
        violations = (
            bound_violations(found["rocs"], epsilon=epsilon, delta=delta or 0.0, **sizes)
            if private and epsilon is not None
            else []
        )
        out[population] = {
            **sizes,
            "strongest": strongest,
            "consistency": "checked" if private else "not private (no bound to check)",
            "violations": [v.to_dict() | {"line": v.line()} for v in violations],
        }
    return out


def headline(found: dict[str, Any]) -> dict[str, Any] | None:
    """The strongest attack on the pair at HEADLINE_FPR with its corrected interval."""
    population = found.get("population")
    return population["strongest"].get(str(HEADLINE_FPR)) if population else None
