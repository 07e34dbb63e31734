"""The eight membership-inference defenses of the defense study, one module each, by name.

l2, dropout, label-smoothing, adversarial-regularization, mixup-mmd, model-stacking,
trust-score-masking, knowledge-distillation. None is DP: see base.py.
"""

# The defense modules are imported for their registration in DEFENSES.
from privacy.defenses import adversarial, mixup_mmd, trust_score  # noqa: F401
from privacy.defenses.base import (
    DEFENSES,
    RELEASES,
    Defense,
    TrainingPlan,
    build_defense,
    register_defense,
)

__all__ = ["DEFENSES", "RELEASES", "Defense", "TrainingPlan", "build_defense", "register_defense"]
