"""Threshold attacks: one scalar signal per example, one global threshold fitted on the shadows."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from attacks.base import AttackContext, AttackScores, Query
from attacks.metrics import best_threshold

# (logits (..., C), labels (...)) -> membership score (...), higher = member
SignalFn = Callable[[np.ndarray, np.ndarray], np.ndarray]


@dataclass(frozen=True)
class FittedThreshold:
    threshold: float
    shadow_balanced_accuracy: float  # reached on the shadows' own in/out examples


@dataclass(frozen=True)
class ThresholdAttack:
    """Loss (Yeom et al. 2018) or confidence (Salem et al. 2019) threshold attack.

    The threshold maximises balanced accuracy over all shadows' in/out examples of the
    population: the attacker calibrates on models it trained, then applies that to the target.
    """

    signal: SignalFn

    def fit_threshold(self, ctx: AttackContext) -> FittedThreshold:
        labels = np.broadcast_to(ctx.y_pop, ctx.shadows.membership.shape)
        scores = self.signal(ctx.pop_logits, labels)
        inside = ctx.shadows.membership
        threshold = best_threshold(scores[inside], scores[~inside])
        tpr = float((scores[inside] >= threshold).mean())
        fpr = float((scores[~inside] >= threshold).mean())
        return FittedThreshold(threshold, (tpr + 1.0 - fpr) / 2.0)

    def run(self, ctx: AttackContext, *, members: Query, nonmembers: Query) -> AttackScores:
        fitted = self.fit_threshold(ctx)
        return AttackScores(
            members=self.signal(members.logits, members.y),
            nonmembers=self.signal(nonmembers.logits, nonmembers.y),
            threshold=fitted.threshold,
            extra={"shadow_balanced_accuracy": fitted.shadow_balanced_accuracy},
        )
