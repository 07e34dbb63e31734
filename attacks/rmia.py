"""RMIA, the relative membership-inference attack of Zarifzadeh et al. 2024 (offline).

For a queried x and each population example z (known non-members of the target), the pairwise
likelihood ratio LR(x, z) = [p(x|target) / p(x)] / [p(z|target) / p(z)] compares how much more the
target likes x than the references do, relative to z. The score is the fraction of z with
LR(x, z) > gamma. Offline, p(x) comes from OUT references only, corrected by the linear
approximation p(x) = ((1 + a) p_OUT(x) + 1 - a) / 2, with `a` tuned on a simulated game (one
reference as the target) over the population.

Ties: with a fixed population the fraction is a non-decreasing step function of x's own ratio,
so identical fractions are ordered by that ratio (a term below one step); the order, and hence
every ROC point, is what the pairwise test gives, without its ties.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
from scipy.special import logsumexp

from attacks import signals
from attacks.base import AttackContext, AttackOutput
from attacks.calibration import simulated_game
from attacks.metrics import auc, best_threshold

A_GRID = tuple(float(a) for a in np.linspace(0.0, 1.0, 11))


def _log_mean_prob(logits: np.ndarray, labels: np.ndarray, axis: int) -> np.ndarray:
    """log of p(y|x) averaged over query variants (axis), exact near p = 1."""
    log_p = -signals.cross_entropy(logits, labels)
    return np.asarray(logsumexp(log_p, axis=axis) - np.log(log_p.shape[axis]))


@dataclass(frozen=True)
class Likelihoods:
    """What RMIA's ratio needs of one game, independent of `a`."""

    log_target: np.ndarray  # (n,) log p(x|target), averaged over query variants
    p_out: np.ndarray  # (n,) mean p(x|reference) over the OUT references of x

    @classmethod
    def of(cls, ctx: AttackContext) -> Likelihoods:
        assert ctx.target_logits is not None
        log_target = _log_mean_prob(ctx.target_logits, ctx.y, axis=0)
        p_refs = np.exp(_log_mean_prob(ctx.ref_logits, ctx.y, axis=1))  # (k, n)
        out = ~ctx.membership
        count = out.sum(axis=0)
        p_out = np.where(
            count > 0,
            (p_refs * out).sum(axis=0) / np.maximum(count, 1),
            p_refs.mean(axis=0),  # no OUT reference for x: all of them
        )
        return cls(log_target, p_out)

    def log_ratios(self, a: float) -> np.ndarray:
        """log p(x|target) - log p(x), p(x) = ((1 + a) p_OUT(x) + 1 - a) / 2."""
        p_x = ((1.0 + a) * self.p_out + (1.0 - a)) / 2.0
        return np.asarray(self.log_target - np.log(np.maximum(p_x, 1e-300)))


def pairwise_scores(
    ratios: np.ndarray, columns: np.ndarray, population: np.ndarray, *, gamma: float
) -> np.ndarray:
    """Fraction of z in population with LR(x, z) > gamma, ties ordered by x's own ratio."""
    z = np.sort(ratios[population])
    x = ratios[columns]
    count = np.searchsorted(z, x - np.log(gamma), side="left")  # z ratio < x ratio / gamma
    below_one_step = 0.5 + np.arctan(x) / np.pi  # in (0, 1), increasing in x
    return np.asarray((count + below_one_step) / (z.size + 1.0))


@dataclass(frozen=True)
class RMIA:
    a: float | None = None  # None: tuned on the simulated game
    gamma: float = 2.0
    a_grid: tuple[float, ...] = field(default=A_GRID)
    calibration_reference: int = 0
    needs_logits: ClassVar[bool] = True

    def _scores(self, lik: Likelihoods, a: float, ctx: AttackContext) -> np.ndarray:
        return pairwise_scores(lik.log_ratios(a), ctx.query, ctx.population, gamma=self.gamma)

    def run(self, ctx: AttackContext) -> AttackOutput:
        # One simulated game (a reference as the target) tunes `a` and fixes the threshold.
        sub, truth = simulated_game(ctx, self.calibration_reference)
        sub_lik = Likelihoods.of(sub)
        by_a = {
            a: self._scores(sub_lik, a, sub) for a in (self.a_grid if self.a is None else [self.a])
        }
        aucs = {a: auc(v[truth], v[~truth]) for a, v in by_a.items()}
        a = max(by_a, key=lambda a: aucs[a])  # the first of equal AUCs, as the grid is ordered
        inside, outside = by_a[a][truth], by_a[a][~truth]
        return AttackOutput(
            scores=self._scores(Likelihoods.of(ctx), a, ctx),
            threshold=best_threshold(inside, outside),
            extra={"a": a, "gamma": self.gamma, "calibration_auc": aucs[a]},
        )
