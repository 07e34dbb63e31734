"""The audit's statistics: from the displacement along the canary of each group in the two
worlds, a Clopper–Pearson and a GDP-based ε lower bound per statistic (every group's and their
likelihood-ratio combination), Bonferroni-corrected over the family (pipelines.audit)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats

from attacks.metrics import epsilon_lower_bound
from privacy.accounting import gaussian_epsilon
from privacy.audit import TrialResult

CONFIDENCE = 0.95
COMBINED = "combined"


@dataclass(frozen=True)
class StatisticBounds:
    """One test statistic's ε bounds (each at the Bonferroni-corrected level)."""

    name: str  # a group name, or "combined" (the likelihood-ratio weighting of all groups)
    cp_lower_bound: float
    gdp_lower_bound: float
    gdp_estimate: float
    mu_estimate: float


def threshold_epsilon(
    out: np.ndarray, inn: np.ndarray, *, delta: float, confidence: float
) -> float:
    """Clopper–Pearson ε lower bound of the test "canary present when the statistic > t": t is
    the threshold whose bound is best on the first half of each sample, and the bound reported
    counts the errors on the second half (choosing t on the same trials would bias it up)."""
    h_out, h_in = len(out) // 2, len(inn) // 2
    if min(h_out, h_in) < 1:
        raise ValueError("the audit needs at least 2 trials per world")

    def bound(o: np.ndarray, i: np.ndarray, t: float) -> float:
        return epsilon_lower_bound(
            false_positives=int(np.sum(o > t)),
            n_negatives=len(o),
            false_negatives=int(np.sum(i <= t)),
            n_positives=len(i),
            delta=delta,
            confidence=confidence,
        )

    choose_out, choose_in = out[:h_out], inn[:h_in]
    candidates = np.unique(np.concatenate([choose_out, choose_in]))
    t = max(candidates, key=lambda c: bound(choose_out, choose_in, float(c)))
    return bound(out[h_out:], inn[h_in:], float(t))


def gdp_bounds(
    out: np.ndarray, inn: np.ndarray, *, delta: float, alpha: float
) -> tuple[float, float, float]:
    """(ε of μ̂, ε of μ̂'s lower 1 − alpha confidence bound, μ̂) of the standardised mean shift."""
    n_out, n_in = len(out), len(inn)
    sd = math.sqrt((out.var(ddof=1) + inn.var(ddof=1)) / 2)
    if not sd > 0:
        mu = math.inf if inn.mean() > out.mean() else 0.0
        return gaussian_epsilon(mu, delta), gaussian_epsilon(mu, delta), mu
    mu = float((inn.mean() - out.mean()) / sd)
    # Standard error of a standardised mean difference (Hedges & Olkin 1985).
    se = math.sqrt((n_out + n_in) / (n_out * n_in) + mu**2 / (2 * (n_out + n_in)))
    lower = mu - float(stats.norm.ppf(1 - alpha)) * se
    return gaussian_epsilon(mu, delta), gaussian_epsilon(lower, delta), mu


def audit_statistics(
    out: np.ndarray,
    inn: np.ndarray,
    *,
    names: list[str],
    weights: np.ndarray,
    delta: float,
    confidence: float = CONFIDENCE,
) -> list[StatisticBounds]:
    """Bounds of every group's statistic and of their weighted combination; `out`, `inn` are
    (trials, groups) displacements, `weights` the likelihood-ratio weight of each group."""
    columns = {name: (out[:, i], inn[:, i]) for i, name in enumerate(names)}
    columns[COMBINED] = (out @ weights, inn @ weights)
    alpha = (1 - confidence) / (2 * len(columns))  # Bonferroni: CP and GDP of each statistic
    found = []
    for name, (o, i) in columns.items():
        # The CP bound is two one-sided bounds (FPR and FNR): alpha/2 each.
        cp = threshold_epsilon(o, i, delta=delta, confidence=1 - alpha / 2)
        estimate, lower, mu = gdp_bounds(o, i, delta=delta, alpha=alpha)
        found.append(StatisticBounds(name, cp, lower, estimate, mu))
    return found


def likelihood_weights(result: TrialResult) -> np.ndarray:
    """Weight of group l in the combined statistic: shift C_l over noise variance (σ_l C_l)²,
    σ_l = σ_eff / sqrt(w_l), the claimed noise (if the claim is true this is the optimal test)."""
    sigma = result.noise_multiplier
    return np.array([g.weight / (sigma**2 * g.clip_norm) for g in result.groups], dtype=float)
