"""Membership-inference attacks against a torch model or an ONNX file, and their metrics."""

from attacks.base import Attack, AttackContext, AttackOutput, AttackScores
from attacks.label_only import GapAttack
from attacks.lira import LiRA
from attacks.metrics import AttackMetrics, attack_metrics, best_threshold
from attacks.references import (
    ReferenceSet,
    TrainRecipe,
    reference_masks,
    reference_targets,
    train_references,
)
from attacks.rmia import RMIA
from attacks.shadow import ShadowAttack
from attacks.suite import (
    ATTACKS,
    DEFAULT_ATTACKS,
    Pool,
    check_attack_names,
    register_attack,
    run_attacks,
    score_attacks,
)
from attacks.target import LabelOnlyTarget, LabelTarget, OnnxTarget, Target, TorchTarget
from attacks.threshold import ThresholdAttack

__all__ = [
    "ATTACKS",
    "DEFAULT_ATTACKS",
    "RMIA",
    "Attack",
    "AttackContext",
    "AttackMetrics",
    "AttackOutput",
    "AttackScores",
    "GapAttack",
    "LabelOnlyTarget",
    "LabelTarget",
    "LiRA",
    "OnnxTarget",
    "Pool",
    "ReferenceSet",
    "ShadowAttack",
    "Target",
    "ThresholdAttack",
    "TorchTarget",
    "TrainRecipe",
    "attack_metrics",
    "best_threshold",
    "check_attack_names",
    "reference_masks",
    "reference_targets",
    "register_attack",
    "run_attacks",
    "score_attacks",
    "train_references",
]
