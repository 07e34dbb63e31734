"""The label-only gap attack (Yeom et al. 2018; with augmented queries, Choquette-Choo et al. 2021).

Works on a target that returns only its predicted class: guess "member" when the example is
classified correctly. With augmented queries the score is the fraction of variants classified
correctly, a finer signal of how robustly the example is fitted. The threshold is fitted on the
references' population examples, like the threshold attacks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from attacks.base import AttackContext, AttackOutput
from attacks.metrics import best_threshold


def correct_fraction(labels: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """labels (..., A, m) predicted for A variants, truth (m,) -> fraction correct (..., m)."""
    return np.asarray((labels == truth).mean(axis=-2))


@dataclass(frozen=True)
class GapAttack:
    needs_logits: ClassVar[bool] = False

    def run(self, ctx: AttackContext) -> AttackOutput:
        pop, q = ctx.population, ctx.query
        ref = correct_fraction(ctx.ref_logits[:, :, pop].argmax(axis=-1), ctx.y[pop])  # (k, m)
        inside = ctx.membership[:, pop]
        threshold = best_threshold(ref[inside], ref[~inside])
        return AttackOutput(
            scores=correct_fraction(ctx.target_labels[:, q], ctx.y[q]),
            threshold=threshold,
            extra={"variants": float(ctx.target_labels.shape[0])},
        )
