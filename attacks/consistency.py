"""Is an attack's ROC consistent with the ε it was run against?

An (ε, δ)-DP training mechanism bounds every membership test: TPR <= e^ε · FPR + δ at every
threshold. An empirical ROC point above that line, beyond its confidence interval, is a broken
privacy claim or a broken attack (or evaluation), and a report must say so.

The test is made at a fixed family of points, fixed before looking at any result: each attack
run × each FPR of FPR_GRID (the operating point of largest TPR at FPR <= the grid value). Each of
the family's K tests compares a Clopper–Pearson lower bound on TPR with e^ε times an upper bound
on FPR plus δ, each bound at confidence 1 - α / (2K) (Bonferroni over the tests and their two
bounds), so that a mechanism that keeps its promise is flagged anywhere with probability <= α.
The operating point is chosen on the same scores it is tested on, which this correction does not
cover exactly; reading the FPR at its grid value (as downsampled ROC curves store it) errs on the
side of not flagging.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from scipy.stats import beta

from attacks.metrics import RocCurve, clopper_pearson_upper

FPR_GRID = (0.001, 0.01, 0.1, 0.5)
ALPHA = 0.05


def clopper_pearson_lower(count: int, n: int, *, confidence: float) -> float:
    """One-sided lower confidence bound on a binomial rate."""
    if count <= 0:
        return 0.0
    return float(beta.ppf(1.0 - confidence, count, n - count + 1))


@dataclass(frozen=True)
class Violation:
    attack: str
    fpr_point: float  # the grid value
    fpr: float  # the operating point's empirical FPR
    tpr: float
    tpr_lower: float  # the TPR's lower confidence bound
    bound_upper: float  # e^ε · (FPR's upper confidence bound) + δ

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def line(self) -> str:
        return (
            f"{self.attack}: TPR {self.tpr:.3f} (>= {self.tpr_lower:.3f}) at FPR {self.fpr:.4f} "
            f"exceeds e^ε·FPR + δ (<= {self.bound_upper:.3f})"
        )


def bound_violations(
    rocs: Mapping[str, RocCurve],
    *,
    n_members: int,
    n_nonmembers: int,
    epsilon: float,
    delta: float,
    alpha: float = ALPHA,
    fpr_grid: tuple[float, ...] = FPR_GRID,
) -> list[Violation]:
    """The family's points whose TPR exceeds the DP bound beyond the corrected intervals."""
    if not (epsilon >= 0 and math.isfinite(epsilon)) or not 0 <= delta < 1:
        raise ValueError(f"need a finite ε >= 0 and δ in [0, 1), got {epsilon}, {delta}")
    if n_members < 1 or n_nonmembers < 1:
        raise ValueError("need at least one member and one non-member")
    tests = max(1, len(rocs) * len(fpr_grid))
    confidence = 1.0 - alpha / (2 * tests)
    found = []
    for attack, roc in rocs.items():
        for point in fpr_grid:
            ok = roc.fpr <= point + 1e-12
            if not ok.any():
                continue
            best = int(roc.tpr.argmax() if ok.all() else (roc.tpr * ok).argmax())
            fpr, tpr = float(roc.fpr[best]), float(roc.tpr[best])
            tp, fp = round(tpr * n_members), round(fpr * n_nonmembers)
            tpr_lower = clopper_pearson_lower(tp, n_members, confidence=confidence)
            fpr_upper = clopper_pearson_upper(fp, n_nonmembers, confidence=confidence)
            bound = math.exp(epsilon) * fpr_upper + delta
            if tpr_lower > bound:
                found.append(Violation(attack, point, fpr, tpr, tpr_lower, bound))
    return found
