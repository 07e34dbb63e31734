"""Threshold attacks: one scalar signal per example, one global threshold fitted on references.

The family: loss (Yeom et al. 2018), confidence and entropy (Salem et al. 2019), modified entropy
(Song & Mittal 2021). Each signal is oriented so that higher means "member".
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from attacks import signals
from attacks.base import AttackContext, AttackOutput
from attacks.metrics import best_threshold

# (logits (..., C), labels (...)) -> membership score (...), higher = member
SignalFn = Callable[[np.ndarray, np.ndarray], np.ndarray]

SIGNALS: dict[str, SignalFn] = {
    "loss": signals.loss_score,
    "confidence": signals.confidence_score,
    "entropy": signals.entropy_score,
    "modified-entropy": signals.modified_entropy_score,
}


@dataclass(frozen=True)
class FittedThreshold:
    threshold: float
    reference_balanced_accuracy: float  # reached on the references' own in/out examples


@dataclass(frozen=True)
class ThresholdAttack:
    """The threshold maximises balanced accuracy over all references' in/out population examples:
    the attacker calibrates on models it trained, then applies that to the target."""

    signal: SignalFn

    def fit_threshold(self, ctx: AttackContext) -> FittedThreshold:
        pop = ctx.population
        inside = ctx.membership[:, pop]
        labels = np.broadcast_to(ctx.y[pop], inside.shape)
        scores = self.signal(ctx.ref_plain[:, pop], labels)
        threshold = best_threshold(scores[inside], scores[~inside])
        tpr = float((scores[inside] >= threshold).mean())
        fpr = float((scores[~inside] >= threshold).mean())
        return FittedThreshold(threshold, (tpr + 1.0 - fpr) / 2.0)

    def run(self, ctx: AttackContext) -> AttackOutput:
        fitted = self.fit_threshold(ctx)
        q = ctx.query
        return AttackOutput(
            scores=self.signal(ctx.logits[q], ctx.y[q]),
            threshold=fitted.threshold,
            extra={"reference_balanced_accuracy": fitted.reference_balanced_accuracy},
        )
