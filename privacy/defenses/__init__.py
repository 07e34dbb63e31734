"""The eight membership-inference defenses of the defense study, one module each, by name.

l2, dropout, label-smoothing, adversarial-regularization, mixup-mmd, model-stacking,
trust-score-masking, knowledge-distillation. None is DP: see base.py.
"""

# Importing each defense's module registers it.
from privacy.defenses import distillation, dropout, l2, label_smoothing, stacking
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
    "build_defense",
    "knob",
    "distillation",
    "dropout",
    "l2",
    "label_smoothing",
    "register_defense",
    "stacking",
]
