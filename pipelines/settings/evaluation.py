"""[evaluate]: the auditor's attacks and reference models."""

from __future__ import annotations

from dataclasses import dataclass

from attacks.signals import AUGMENTATIONS
from attacks.suite import check_attack_names
from pipelines.settings.base import Section, one_of, require, setting

# auto: "target" for a DP-trained artifact (references trained like it: stronger attacks,
# BENCHMARKS.md) and "train" otherwise | train ([train] for shadow_epochs, Adam: cheap) |
# target (the training stage's own recipe).
RECIPES = ("auto", "train", "target")
ATTACKS = [
    "loss",
    "confidence",
    "entropy",
    "modified-entropy",
    "shadow",
    "lira",
    "lira-offline",
    "rmia",
    "gap",
]
# The evaluate stage's audit adds the LiRA variants with per-example or fixed variance.
AUDIT_ATTACKS = [
    *ATTACKS,
    "lira-per-example",
    "lira-fixed",
    "lira-offline-per-example",
    "lira-offline-fixed",
]


@dataclass(frozen=True)
class EvaluateSettings(Section):
    name = "evaluate"
    attacks: list[str] = setting(ATTACKS, "attacks run on every evaluated artifact")
    # Reference (shadow) models: trained once per run on random halves of the candidate pool
    # (evaluation pair + population) and shared by the shadow, LiRA and RMIA attacks.
    shadow_models: int = setting(8, "reference models (shadow, LiRA, RMIA)")
    shadow_epochs: int = setting(10, "epochs of the Adam reference recipe")
    reference_recipe: str = setting("auto", "auto | train (Adam, cheap) | target (like the target)")
    mirror: bool = setting(False, "pass the references through the artifact's compression")
    augment: str = setting("none", "none | shift: extra query variants for LiRA, RMIA and gap")
    samples: int = setting(500, "members and as many non-members attacked")
    delta: float = setting(1e-5, "δ of the attacks' empirical ε lower bounds")
    reference_cache: str = setting(
        "",
        "shared folder of reference models, one subfolder per recipe and pool, reused by run "
        'dirs with the same ones and locked while trained (relative: from the run dir; "": the '
        "run dir's own references/)",
    )
    audit_attacks: list[str] = setting(
        AUDIT_ATTACKS, "the evaluate stage's attacks (those measured already are reused)"
    )

    def __post_init__(self) -> None:
        check_attack_names([*self.attacks, *self.audit_attacks])
        one_of("evaluate", "reference_recipe", self.reference_recipe, RECIPES)
        one_of("evaluate", "augment", self.augment, AUGMENTATIONS)
        require(0 < self.delta < 1, f"evaluate.delta must be in (0, 1), got {self.delta}")
        require(self.samples >= 1, f"evaluate.samples must be >= 1, got {self.samples}")
        require(
            self.shadow_models >= 2 and self.shadow_epochs >= 1,
            "evaluate.shadow_models must be >= 2 and shadow_epochs >= 1",
        )
