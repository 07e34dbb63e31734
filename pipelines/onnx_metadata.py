"""What a shipped ONNX file says about itself: ε, noise mode, accuracy, stage history, version,
and (only on request, labelled as the audit's) the strongest attack measured on its source."""

from __future__ import annotations

import json
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from pipelines.artifacts import artifact_hash
from pipelines.context import RunContext
from pipelines.findings import findings, headline
from pipelines.spend import Guarantee
from privacy.randomness import noise_description

ATTACK_METADATA_NOTE = (
    "audit statistics of the training data (members vs non-members), not covered by ε"
)
# privcomp.attack.* with export.attack_metadata: strongest_attack's keys.
ATTACK_KEYS = ("attack", "fpr", "tpr", "tpr_interval", "beats_chance", "measured_on")


def _version() -> str:
    try:
        return version("privcomp")
    except PackageNotFoundError:  # running from a source tree without installing
        return "unknown"


def strongest_attack(ctx: RunContext, name: str, path: Path) -> dict[str, Any] | None:
    """The strongest attack the auditor measured on exactly this artifact (same hash), if any:
    the summary's headline (pipelines.findings: largest TPR at 1% FPR on the pair, its interval
    corrected for picking it out of the attacks run), never an uncorrected maximum."""
    measured = ctx.measurements.get(artifact_hash(name, path))
    if measured is None or not measured.attacks:
        return None
    strongest = headline(findings(measured.attacks, measured.roc, None, None))
    if strongest is None:
        return None
    inside = path.is_relative_to(ctx.run_dir)
    return {
        "attack": strongest["attack"],
        "fpr": strongest["fpr_point"],
        "tpr": strongest["tpr"],
        "tpr_interval": [strongest["tpr_lower"], strongest["tpr_upper"]],
        "beats_chance": strongest["beats_chance"],
        "measured_on": str(path.relative_to(ctx.run_dir) if inside else path),
    }


def onnx_metadata(
    ctx: RunContext,
    *,
    stage: str,
    guarantee: Guarantee | None,
    test_accuracy: float,
    attack: dict[str, Any] | None,
    attack_metadata: bool,
    extra: dict[str, Any] | None = None,
) -> dict[str, str]:
    """Properties carried inside the ONNX file, so a deployed model says what it promises.

    Every value is JSON (null for unknown or not private). Nothing here is computed from the
    members except through a DP mechanism ε covers (the weights' guarantee itself; test accuracy
    reads the test split), unless the user turns on `export.attack_metadata`: the auditor's
    attack numbers are statistics of the members that ε does not cover, and then the file says
    so under privcomp.attack.note.
    """
    eps = guarantee.epsilon if guarantee else None
    mode = ctx.noise_mode
    defense = ctx.defense()
    meta: dict[str, Any] = {
        "privcomp.version": _version(),
        "privcomp.dataset": ctx.dataset.name,
        "privcomp.epsilon": eps,
        "privcomp.delta": guarantee.delta if guarantee and eps is not None else None,
        "privcomp.accountant": guarantee.accountant if guarantee and eps is not None else None,
        "privcomp.noise": mode,
        "privcomp.noise_note": noise_description(mode),
        "privcomp.stages": [*ctx.history, stage],
        "privcomp.test_accuracy": test_accuracy,
        # A defense's name and settings are configuration; it is not DP (epsilon stays null).
        "privcomp.defense": defense.name if defense else None,
        "privcomp.release": defense.release if defense else "scores",
    }
    if attack_metadata:
        attack = attack or {}
        meta["privcomp.attack.note"] = ATTACK_METADATA_NOTE
        meta.update({f"privcomp.attack.{k}": attack.get(k) for k in ATTACK_KEYS})
    meta.update(extra or {})
    return {k: json.dumps(v) for k, v in meta.items()}
