"""The eight membership-inference defenses of the defense study, one module each, by name.

l2, dropout, label-smoothing, adversarial-regularization, mixup-mmd, model-stacking,
trust-score-masking, knowledge-distillation. None is DP: see base.py.
"""

# Importing each defense's module registers it.
from privacy.defenses import (
    adversarial,
    distillation,
    dropout,
    l2,
    label_smoothing,
    mixup_mmd,
    stacking,
    trust_score,
)
from privacy.defenses.base import (
    DEFENSES,
    RELEASES,
    Defense,
    TrainingPlan,
    build_defense,
    knob,
    register_defense,
)

__all__ = [
    "DEFENSES",
    "RELEASES",
    "Defense",
    "TrainingPlan",
    "adversarial",
    "build_defense",
    "distillation",
    "dropout",
    "knob",
    "l2",
    "label_smoothing",
    "mixup_mmd",
    "register_defense",
    "stacking",
    "trust_score",
]
