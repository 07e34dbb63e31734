"""Membership-inference metrics: AUC, balanced accuracy, TPR at low FPR, an empirical ε lower bound.

Convention everywhere in attacks/: a higher score means "member", and an example is predicted a
member when its score is >= the threshold. The threshold is fitted on attacker data (shadow models)
by the attack; here it is only applied to the evaluation pair.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.stats import beta, rankdata
from sklearn.metrics import classification_report, roc_curve

# One-sided confidence of each of the two Clopper-Pearson bounds (FPR and FNR) in the ε lower
# bound: 0.975 each, so that both hold together with probability >= 95% (union bound).
CP_CONFIDENCE = 0.975
# FPRs every stored ROC keeps exactly (the headline TPRs and attacks.consistency's family read
# them), besides its log-spaced points; and FNRs whose operating points it keeps exactly too
# (the smallest FPR at each: where the consistency check's TNR side binds, near TPR 1, and the
# log-spaced grid is sparse).
ANCHOR_FPRS = (0.001, 0.01, 0.1, 0.5)
ANCHOR_FNRS = ANCHOR_FPRS


@dataclass(frozen=True)
class RocCurve:
    fpr: np.ndarray
    tpr: np.ndarray

    def tpr_at(self, max_fpr: float) -> float:
        """Largest TPR among operating points with FPR <= max_fpr (threshold-free)."""
        ok = self.fpr <= max_fpr + 1e-12
        return float(self.tpr[ok].max()) if ok.any() else 0.0

    def fpr_at(self, max_fnr: float) -> float:
        """Smallest FPR among operating points with FNR <= max_fnr (TPR >= 1 - max_fnr)."""
        ok = self.tpr >= 1.0 - max_fnr - 1e-12
        return float(self.fpr[ok].min()) if ok.any() else 1.0

    def downsample(self, points: int) -> RocCurve:
        """Log-spaced FPR grid (for log-log plots), the ANCHOR_FPRS and the FPRs of the
        ANCHOR_FNRS' points; TPR is the best one at or below each FPR, so the stored TPR at 1%
        FPR is the one the metrics report, and the point of smallest FPR at FNR <= 1% is kept."""
        positive = self.fpr[self.fpr > 0]
        low = float(positive.min()) if positive.size else 1.0
        spaced = np.geomspace(low, 1.0, max(points - 1, 1))
        at_fnrs = [self.fpr_at(g) for g in ANCHOR_FNRS]
        grid = np.unique(np.concatenate([[0.0], spaced, ANCHOR_FPRS, at_fnrs]))
        tpr = np.array([self.tpr_at(float(g)) for g in grid])
        return RocCurve(fpr=grid, tpr=tpr)


@dataclass(frozen=True)
class ClassificationSummary:
    """The original study's attack report (sklearn classification_report at the threshold)."""

    accuracy: float
    macro_precision: float
    macro_recall: float
    macro_f1: float
    weighted_precision: float
    weighted_recall: float
    weighted_f1: float

    def to_dict(self) -> dict[str, float]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class AttackMetrics:
    auc: float
    auc_ci: tuple[float, float]  # bootstrap 95% percentile interval
    balanced_accuracy: float  # at the attacker's threshold
    advantage: float  # TPR - FPR at the attacker's threshold
    tpr_at_1pct_fpr: float
    tpr_at_0_1pct_fpr: float
    tpr_at_1pct_fpr_ci: tuple[float, float]  # bootstrap 95% percentile intervals
    tpr_at_0_1pct_fpr_ci: tuple[float, float]
    epsilon_lower_bound: float
    threshold: float  # may be inf: the attacker found no useful threshold
    n_members: int
    n_nonmembers: int
    report: ClassificationSummary
    roc: RocCurve = field(repr=False)
    extra: dict[str, float] = field(default_factory=dict)  # attack-specific numbers
    # The same metrics on the canaries alone (data.canaries), when the pool has any.
    canaries: AttackMetrics | None = None

    def to_dict(self, *, roc_points: int = 0) -> dict[str, Any]:
        """JSON-ready; the ROC curve only when roc_points > 0, downsampled to about that many
        (the canaries' under "canaries" beside it)."""
        out: dict[str, Any] = {
            "auc": self.auc,
            "auc_ci": [self.auc_ci[0], self.auc_ci[1]],
            "balanced_accuracy": self.balanced_accuracy,
            "advantage": self.advantage,
            "tpr_at_1pct_fpr": self.tpr_at_1pct_fpr,
            "tpr_at_0_1pct_fpr": self.tpr_at_0_1pct_fpr,
            "tpr_at_1pct_fpr_ci": list(self.tpr_at_1pct_fpr_ci),
            "tpr_at_0_1pct_fpr_ci": list(self.tpr_at_0_1pct_fpr_ci),
            "epsilon_lower_bound": self.epsilon_lower_bound,
            # JSON has no infinity; None says "no threshold".
            "threshold": self.threshold if math.isfinite(self.threshold) else None,
            "n_members": self.n_members,
            "n_nonmembers": self.n_nonmembers,
            "report": self.report.to_dict(),
            **({"extra": dict(self.extra)} if self.extra else {}),
        }
        if self.canaries is not None:
            out["canaries"] = self.canaries.to_dict()
        if roc_points > 0:
            small = self.roc.downsample(roc_points)
            out["roc"] = {"fpr": small.fpr.tolist(), "tpr": small.tpr.tolist()}
            if self.canaries is not None:
                tiny = self.canaries.roc.downsample(roc_points)
                out["roc"]["canaries"] = {"fpr": tiny.fpr.tolist(), "tpr": tiny.tpr.tolist()}
        return out


def attack_metrics(
    member_scores: np.ndarray,
    nonmember_scores: np.ndarray,
    *,
    threshold: float,
    delta: float = 1e-5,
    n_bootstrap: int = 200,
    seed: int = 0,
    extra: dict[str, float] | None = None,
) -> AttackMetrics:
    """All metrics of one attack on one evaluation pair (higher score = member)."""
    members, nonmembers = _as_scores(member_scores), _as_scores(nonmember_scores)
    tp = int((members >= threshold).sum())
    fp = int((nonmembers >= threshold).sum())
    tpr, fpr = tp / members.size, fp / nonmembers.size
    roc = roc_of(members, nonmembers)
    intervals = bootstrap_intervals(members, nonmembers, n_bootstrap=n_bootstrap, seed=seed)
    return AttackMetrics(
        auc=auc(members, nonmembers),
        auc_ci=intervals["auc"],
        tpr_at_1pct_fpr_ci=intervals["tpr_at_1pct_fpr"],
        tpr_at_0_1pct_fpr_ci=intervals["tpr_at_0_1pct_fpr"],
        balanced_accuracy=(tpr + 1.0 - fpr) / 2.0,
        advantage=tpr - fpr,
        tpr_at_1pct_fpr=roc.tpr_at(0.01),
        tpr_at_0_1pct_fpr=roc.tpr_at(0.001),
        epsilon_lower_bound=epsilon_lower_bound(
            false_positives=fp,
            n_negatives=nonmembers.size,
            false_negatives=members.size - tp,
            n_positives=members.size,
            delta=delta,
        ),
        threshold=float(threshold),
        n_members=members.size,
        n_nonmembers=nonmembers.size,
        report=classification_summary(members, nonmembers, threshold=threshold),
        roc=roc,
        extra=dict(extra or {}),
    )


def _as_scores(scores: np.ndarray) -> np.ndarray:
    out = np.asarray(scores, dtype=np.float64).ravel()
    if out.size == 0:
        raise ValueError("attack metrics need at least one member and one nonmember score")
    if not np.isfinite(out).all():
        raise ValueError("attack scores contain NaN or infinite values")
    return out


def auc(members: np.ndarray, nonmembers: np.ndarray) -> float:
    """Mann-Whitney AUC; tied scores count half (identical to sklearn's roc_auc_score)."""
    ranks = rankdata(np.concatenate([members, nonmembers]))
    n1, n0 = members.size, nonmembers.size
    return float((ranks[:n1].sum() - n1 * (n1 + 1) / 2.0) / (n1 * n0))


def bootstrap_intervals(
    members: np.ndarray, nonmembers: np.ndarray, *, n_bootstrap: int, seed: int
) -> dict[str, tuple[float, float]]:
    """95% percentile intervals of the AUC and of TPR at 1% and 0.1% FPR; members and
    non-members are resampled separately (fixed sizes), so a TPR's interval carries the noise of
    the threshold that the non-members set as well as that of the members."""

    def point(m: np.ndarray, n: np.ndarray) -> tuple[float, float, float]:
        roc = roc_of(m, n)
        return auc(m, n), roc.tpr_at(0.01), roc.tpr_at(0.001)

    if n_bootstrap <= 0:
        values = np.array([point(members, nonmembers)])
    else:
        rng = np.random.default_rng(seed)
        values = np.array(
            [
                point(rng.choice(members, members.size), rng.choice(nonmembers, nonmembers.size))
                for _ in range(n_bootstrap)
            ]
        )
    lo, hi = np.percentile(values, [2.5, 97.5], axis=0)
    keys = ("auc", "tpr_at_1pct_fpr", "tpr_at_0_1pct_fpr")
    return {key: (float(lo[i]), float(hi[i])) for i, key in enumerate(keys)}


def roc_of(members: np.ndarray, nonmembers: np.ndarray) -> RocCurve:
    labels = np.concatenate([np.ones(members.size), np.zeros(nonmembers.size)])
    # Keep every operating point: TPR at a tiny FPR must not depend on which ones sklearn drops.
    fpr, tpr, _ = roc_curve(labels, np.concatenate([members, nonmembers]), drop_intermediate=False)
    return RocCurve(fpr=fpr, tpr=tpr)


def clopper_pearson_upper(count: int, n: int, *, confidence: float = CP_CONFIDENCE) -> float:
    """One-sided upper confidence bound on a binomial rate."""
    if count >= n:
        return 1.0
    return float(beta.ppf(confidence, count + 1, n - count))


def epsilon_lower_bound(
    *,
    false_positives: int,
    n_negatives: int,
    false_negatives: int,
    n_positives: int,
    delta: float,
    confidence: float = CP_CONFIDENCE,
) -> float:
    """Empirical ε lower bound of Jagielski et al. 2020 from one attack's error counts.

    An (ε, δ)-DP mechanism forces FPR + e^ε FNR >= 1 - δ and FNR + e^ε FPR >= 1 - δ, so upper
    confidence bounds on both error rates turn into a lower bound on ε that holds with high
    probability (each bound at `confidence`).
    """
    fpr_hi = clopper_pearson_upper(false_positives, n_negatives, confidence=confidence)
    fnr_hi = clopper_pearson_upper(false_negatives, n_positives, confidence=confidence)
    candidates = [0.0]
    for num, den in ((1.0 - delta - fnr_hi, fpr_hi), (1.0 - delta - fpr_hi, fnr_hi)):
        if num > 0.0 and den > 0.0:
            candidates.append(math.log(num / den))
    return max(candidates)


def best_threshold(member_scores: np.ndarray, nonmember_scores: np.ndarray) -> float:
    """Threshold with the highest balanced accuracy on (attacker) data; inf if none beats chance.

    The threshold sits halfway between two neighbouring distinct scores, so a new example that
    falls in the gap is not decided by which side happened to be observed.
    """
    members, nonmembers = _as_scores(member_scores), _as_scores(nonmember_scores)
    values = np.unique(np.concatenate([members, nonmembers]))[::-1]  # descending
    # Member count at or above each candidate value, via sorted search.
    tpr = (members.size - np.searchsorted(np.sort(members), values, side="left")) / members.size
    fpr = (
        nonmembers.size - np.searchsorted(np.sort(nonmembers), values, side="left")
    ) / nonmembers.size
    gain = tpr - fpr
    best = int(np.argmax(gain))
    if gain[best] <= 0.0:
        return math.inf
    if best + 1 < values.size:
        return float((values[best] + values[best + 1]) / 2.0)
    return float(values[best])


def classification_summary(
    members: np.ndarray, nonmembers: np.ndarray, *, threshold: float
) -> ClassificationSummary:
    truth = np.concatenate([np.ones(members.size, int), np.zeros(nonmembers.size, int)])
    guess = (np.concatenate([members, nonmembers]) >= threshold).astype(int)
    rep = classification_report(truth, guess, labels=[0, 1], output_dict=True, zero_division=0.0)
    macro, weighted = rep["macro avg"], rep["weighted avg"]
    return ClassificationSummary(
        accuracy=float((truth == guess).mean()),
        macro_precision=float(macro["precision"]),
        macro_recall=float(macro["recall"]),
        macro_f1=float(macro["f1-score"]),
        weighted_precision=float(weighted["precision"]),
        weighted_recall=float(weighted["recall"]),
        weighted_f1=float(weighted["f1-score"]),
    )
