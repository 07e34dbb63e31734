"""Membership-inference attacks against a torch model or an ONNX file, and their metrics."""

from attacks.base import Attack, AttackContext, AttackScores, Query
from attacks.metrics import AttackMetrics, attack_metrics, best_threshold
from attacks.shadow import ShadowAttack, ShadowSet, shadow_masks, train_shadows
from attacks.suite import ATTACKS, DEFAULT_ATTACKS, register_attack, run_attacks, score_attacks
from attacks.target import OnnxTarget, Target, TorchTarget
from attacks.threshold import ThresholdAttack

__all__ = [
    "ATTACKS",
    "DEFAULT_ATTACKS",
    "Attack",
    "AttackContext",
    "AttackMetrics",
    "AttackScores",
    "OnnxTarget",
    "Query",
    "ShadowAttack",
    "ShadowSet",
    "Target",
    "ThresholdAttack",
    "TorchTarget",
    "attack_metrics",
    "best_threshold",
    "register_attack",
    "run_attacks",
    "score_attacks",
    "shadow_masks",
    "train_shadows",
]
