"""Attacker-side calibration: one reference plays the target, the others attack it.

Attacks whose scores have no natural decision rule (LiRA offline, RMIA) or a hyper-parameter
(RMIA's `a`) are tuned on this simulated game, on the population only: the evaluation pair is
never used to fit anything.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from attacks.base import AttackContext
from attacks.errors import AttackError
from attacks.metrics import auc, best_threshold

ScoresFn = Callable[[AttackContext, np.ndarray], np.ndarray]  # (ctx, pool columns) -> scores


@dataclass(frozen=True)
class Calibration:
    threshold: float  # best balanced accuracy on the simulated game (inf: none beats chance)
    auc: float  # the simulated game's AUC


def simulated_game(ctx: AttackContext, reference: int = 0) -> tuple[AttackContext, np.ndarray]:
    if ctx.k < 2:
        raise AttackError(
            f"this attack calibrates on the references and needs at least 2 (got {ctx.k}); "
            "raise evaluate.shadow_models"
        )
    sub, truth = ctx.simulate(reference % ctx.k)
    if truth.all() or not truth.any():
        raise AttackError("the calibration reference saw all or none of the population")
    return sub, truth


def calibrate(ctx: AttackContext, scores: ScoresFn, *, reference: int = 0) -> Calibration:
    sub, truth = simulated_game(ctx, reference)
    values = scores(sub, sub.query)
    inside, outside = values[truth], values[~truth]
    return Calibration(threshold=best_threshold(inside, outside), auc=auc(inside, outside))
