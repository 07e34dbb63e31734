"""Is an attack's ROC consistent with the ε it was run against?

An (ε, δ)-DP training mechanism bounds every membership test at every threshold, from both
ends of the ROC (Kairouz et al. 2015's privacy region; the ε lower bound of attacks.metrics
reads the same two): TPR <= e^ε · FPR + δ, and TNR <= e^ε · FNR + δ (1 - FPR <= e^ε · (1 - TPR)
+ δ, which binds where the TPR is near 1). An empirical ROC point outside either, beyond its
confidence intervals, is a broken privacy claim or a broken attack (or evaluation), and a report
must say so.

The test is made at a fixed family of points, fixed before looking at any result: for each
attack run, the operating point of largest TPR at FPR <= g for each g of FPR_GRID (where the
TPR side binds) and the one of smallest FPR at FNR <= g for each g of FNR_GRID (where the TNR
side binds, near TPR 1), K points in all. At each, a Clopper–Pearson lower bound on TPR and an
upper bound on FPR, each at confidence 1 - α / (2K) (Bonferroni over the points and their two
bounds), stand in for the rates in both inequalities: while all 2K bounds hold (probability
>= 1 - α) a mechanism that keeps its promise satisfies both at every point with the bounds in
place of the rates, so it is flagged anywhere with probability <= α.
The strongest attack a report headlines is picked from the FPR half of the family, its TPR
interval corrected for that half the same way (`strongest_attack`).

The operating point is chosen on the same scores it is tested on, which this correction does not
cover exactly. Downsampled ROC curves (attacks.metrics.RocCurve.downsample, what metrics.json
stores) keep both halves' points exactly: the grid FPRs, and the FPR of the smallest-FPR point
at each grid FNR (the log-spaced grid alone is sparse near FPR 1, where the TNR side binds).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy.stats import beta

from attacks.metrics import ANCHOR_FNRS, ANCHOR_FPRS, RocCurve, clopper_pearson_upper

FPR_GRID = ANCHOR_FPRS  # stored ROC curves keep these points exactly
FNR_GRID = ANCHOR_FNRS  # and the smallest-FPR point at each of these FNRs
ALPHA = 0.05


def clopper_pearson_lower(count: int, n: int, *, confidence: float) -> float:
    """One-sided lower confidence bound on a binomial rate."""
    if count <= 0:
        return 0.0
    return float(beta.ppf(1.0 - confidence, count, n - count + 1))


TPR_SIDE, TNR_SIDE = "TPR", "TNR"  # which inequality: TPR <= e^ε·FPR + δ, TNR <= e^ε·FNR + δ


def _exp(epsilon: float) -> float:
    """e^ε, capped where it would overflow (past ε ~ 709): a bound above 1 binds nothing."""
    return math.exp(min(epsilon, 700.0))


def dp_tpr_bound(fpr: float, *, epsilon: float, delta: float) -> float:
    """The largest TPR an (ε, δ)-DP mechanism allows at this FPR: both sides of the region."""
    scale = _exp(epsilon)
    return min(1.0, scale * fpr + delta, 1.0 - (1.0 - fpr - delta) / scale)


@dataclass(frozen=True)
class Violation:
    attack: str
    family: str  # "FPR": the point of largest TPR at FPR <= point; "FNR": smallest FPR at FNR <=
    point: float  # the grid value
    fpr: float  # the operating point's FPR (an upper bound of it on a downsampled ROC)
    tpr: float
    side: str  # TPR_SIDE or TNR_SIDE
    rate_lower: float  # that side's rate (TPR, or TNR = 1 - FPR): its lower confidence bound
    bound_upper: float  # e^ε · (upper bound of FPR, or of FNR = 1 - TPR) + δ

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def line(self) -> str:
        if self.side == TPR_SIDE:
            rate, against, at = self.tpr, "FPR", self.fpr
        else:
            rate, against, at = 1.0 - self.fpr, "FNR", 1.0 - self.tpr
        return (
            f"{self.attack}: {self.side} {rate:.3f} (>= {self.rate_lower:.3f}) at {against} "
            f"{at:.4f} exceeds e^ε·{against} + δ (<= {self.bound_upper:.3f})"
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
    fnr_grid: tuple[float, ...] = FNR_GRID,
) -> list[Violation]:
    """The family's points outside the DP bounds (either side) beyond the corrected intervals."""
    if not (epsilon >= 0 and math.isfinite(epsilon)) or not 0 <= delta < 1:
        raise ValueError(f"need a finite ε >= 0 and δ in [0, 1), got {epsilon}, {delta}")
    if n_members < 1 or n_nonmembers < 1:
        raise ValueError("need at least one member and one non-member")
    tests = max(1, len(rocs) * (len(fpr_grid) + len(fnr_grid)))
    confidence = 1.0 - alpha / (2 * tests)
    scale = _exp(epsilon)
    found = []
    points = [("FPR", *p) for p in _family(rocs, fpr_grid)]
    points += [("FNR", *p) for p in _fnr_family(rocs, fnr_grid)]
    for family, attack, point, fpr, tpr in points:
        tp, fp = round(tpr * n_members), round(fpr * n_nonmembers)
        tpr_lower = clopper_pearson_lower(tp, n_members, confidence=confidence)
        fpr_upper = clopper_pearson_upper(fp, n_nonmembers, confidence=confidence)
        sides = (
            (TPR_SIDE, tpr_lower, scale * fpr_upper + delta),
            (TNR_SIDE, 1.0 - fpr_upper, scale * (1.0 - tpr_lower) + delta),
        )
        for side, rate_lower, bound in sides:
            if rate_lower > bound:
                violation = Violation(attack, family, point, fpr, tpr, side, rate_lower, bound)
                found.append(violation)
    return found


def _family(
    rocs: Mapping[str, RocCurve], fpr_grid: tuple[float, ...]
) -> Iterator[tuple[str, float, float, float]]:
    """(attack, grid FPR, operating point's FPR, its TPR): the operating point of largest TPR at
    FPR <= each grid value, for every attack."""
    for attack, roc in rocs.items():
        for point in fpr_grid:
            ok = roc.fpr <= point + 1e-12
            if not ok.any():
                continue
            best = int(roc.tpr.argmax() if ok.all() else (roc.tpr * ok).argmax())
            yield attack, point, float(roc.fpr[best]), float(roc.tpr[best])


def _fnr_family(
    rocs: Mapping[str, RocCurve], fnr_grid: tuple[float, ...]
) -> Iterator[tuple[str, float, float, float]]:
    """(attack, grid FNR, operating point's FPR, its TPR): the operating point of smallest FPR
    at FNR <= each grid value (TPR >= 1 - g), for every attack: the mirror of _family."""
    for attack, roc in rocs.items():
        for point in fnr_grid:
            ok = np.flatnonzero(roc.tpr >= 1.0 - point - 1e-12)
            if not ok.size:
                continue
            lowest = ok[roc.fpr[ok] == roc.fpr[ok].min()]
            best = int(lowest[roc.tpr[lowest].argmax()])  # of one FPR, the largest TPR
            yield attack, point, float(roc.fpr[best]), float(roc.tpr[best])


@dataclass(frozen=True)
class Strongest:
    """The attack of largest TPR at one FPR of the family, with a TPR interval corrected for
    having picked it out of the family (Bonferroni over attacks × grid, two-sided)."""

    attack: str
    fpr_point: float  # the grid value
    fpr: float  # the operating point's FPR (on a downsampled ROC, the grid value: above it)
    fpr_upper: float
    tpr: float
    tpr_lower: float
    tpr_upper: float
    tests: int  # the family's size the intervals are corrected for

    @property
    def beats_chance(self) -> bool:
        """Whether the corrected TPR lower bound exceeds the FPR's upper bound: a guess has TPR =
        FPR, so this is the consistency test against ε = 0."""
        return self.tpr_lower > self.fpr_upper

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "beats_chance": self.beats_chance}


def strongest_attack(
    rocs: Mapping[str, RocCurve],
    *,
    n_members: int,
    n_nonmembers: int,
    fpr_point: float,
    alpha: float = ALPHA,
    fpr_grid: tuple[float, ...] = FPR_GRID,
) -> Strongest | None:
    """The strongest attack at `fpr_point` (one of fpr_grid). The maximum of many noisy TPRs is
    biased upwards: its interval is the Clopper–Pearson one at confidence 1 - α / (2K) for the
    family's K tests, so that all K intervals hold at once with probability >= 1 - α and the one
    picked is covered whichever it is. A model that leaks nothing then reads as 'within chance'
    instead of slightly leaky by selection."""
    if fpr_point not in fpr_grid:
        raise ValueError(f"FPR {fpr_point} is not in the family's grid {fpr_grid}")
    if n_members < 1 or n_nonmembers < 1:
        raise ValueError("need at least one member and one non-member")
    at_point = [(a, f, t) for a, point, f, t in _family(rocs, fpr_grid) if point == fpr_point]
    if not at_point:
        return None
    attack, fpr, tpr = max(at_point, key=lambda item: item[2])
    tests = len(rocs) * len(fpr_grid)
    confidence = 1.0 - alpha / (2 * tests)
    tp, fp = round(tpr * n_members), round(fpr * n_nonmembers)
    return Strongest(
        attack=attack,
        fpr_point=fpr_point,
        fpr=fpr,
        fpr_upper=clopper_pearson_upper(fp, n_nonmembers, confidence=confidence),
        tpr=tpr,
        tpr_lower=clopper_pearson_lower(tp, n_members, confidence=confidence),
        tpr_upper=clopper_pearson_upper(tp, n_members, confidence=confidence),
        tests=tests,
    )
