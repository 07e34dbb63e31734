"""The compression sections: [prune], [export], [quantize], [distill]."""

from __future__ import annotations

import math
from dataclasses import dataclass

from compress.int8 import CALIBRATION_METHODS
from compress.prune import IMPORTANCES
from compress.quantize import MODES
from models.zoo import BASE_MODELS
from pipelines.errors import PrivcompError
from pipelines.settings.base import Section, derived, one_of, require, setting
from pipelines.settings.training import TrainSettings
from privacy.config import LADPConfig

FINETUNES = ("none", "ladp", "public")
CALIBRATION_SOURCES = ("public", "members")
DISTILL_MODES = ("soft", "pate")


@dataclass(frozen=True)
class PruneSettings(Section):
    name = "prune"
    ratio: float = setting(0.5, "fraction of channels removed")
    importance: str = setting("l2", "l1 | l2 | lamp | fpgm (weights only) | taylor (public split)")
    global_pruning: bool = setting(False, "rank all layers together (each keeps >= 10%)")
    iterative_steps: int = setting(1, "prune in this many steps, fine-tuning after each")
    taylor_samples: int = setting(256, "public examples whose gradients score channels")
    # Pruning a DP model costs much accuracy (mnist5k, ε 3: 0.90 -> 0.46 at ratio 0.5); 3
    # epochs on the public split win it back for free (-> 0.91); see the README.
    finetune: str = setting("public", "public (free) | ladp (members, DP, composed) | none")
    finetune_epochs: int = setting(3, "fine-tune epochs per pruning step")
    finetune_epsilon: float = setting(4.0, "ladp: target ε of the model after fine-tuning")
    finetune_lr: float = setting(0.0, "0: the lr of [train-ladp] (ladp) or [train] (public)")
    # Filled by the loader: the DP fine-tune runs the run's LADP settings ([train-ladp]), the
    # public fine-tune the non-private recipe ([train]).
    dp_recipe: LADPConfig = derived(LADPConfig())
    public_recipe: TrainSettings = derived(TrainSettings())

    def __post_init__(self) -> None:
        require(0 < self.ratio < 1, f"prune.ratio must be in (0, 1), got {self.ratio}")
        if self.importance not in IMPORTANCES:
            known = ", ".join(sorted(IMPORTANCES))
            raise PrivcompError(f"prune.importance '{self.importance}' unknown (known: {known})")
        require(
            self.iterative_steps >= 1 and self.taylor_samples >= 1,
            "prune.iterative_steps and prune.taylor_samples must be >= 1",
        )
        one_of("prune", "finetune", self.finetune, FINETUNES)
        require(
            self.finetune_epochs >= 1 and 0 <= self.finetune_lr < math.inf,
            "prune.finetune_epochs must be >= 1 and finetune_lr a finite number >= 0",
        )
        require(
            math.isfinite(self.finetune_epsilon) and self.finetune_epsilon > 0,
            f"prune.finetune_epsilon must be > 0, got {self.finetune_epsilon}",
        )


@dataclass(frozen=True)
class ExportSettings(Section):
    name = "export"
    tolerance: float = setting(
        1e-4, "max |ONNX - torch| on the test split, x max(1, largest |logit|)"
    )
    # Off by default: attack results are statistics of the members that ε does not cover
    # (labelled so when on).
    attack_metadata: bool = setting(
        False, "copy the auditor's strongest attack into the ONNX metadata (labelled)"
    )

    def __post_init__(self) -> None:
        require(
            math.isfinite(self.tolerance) and self.tolerance > 0,
            f"export.tolerance must be > 0, got {self.tolerance}",
        )


@dataclass(frozen=True)
class QuantizeSettings(Section):
    name = "quantize"
    mode: str = setting("auto", "auto (fastest measured here) | static | dynamic | weights-only")
    per_channel: bool = setting(True, "per-channel weight scales")
    calibration: str = setting("public", "public | members (refused unless allowed)")
    allow_private_calibration: bool = setting(False, "accept ε = ∞ for members calibration")
    calibration_samples: int = setting(256, "calibration examples (static)")
    calibration_method: str = setting("minmax", "minmax | entropy | percentile | distribution")
    timing_samples: int = setting(256, "public examples auto times and checks accuracy on")
    max_accuracy_drop: float = setting(0.02, "auto: candidates further below fp32 are not chosen")
    # Filled by the loader from [export]: a torch input is exported first, checked the same way,
    # and both files carry the same metadata.
    export: ExportSettings = derived(ExportSettings())

    def __post_init__(self) -> None:
        one_of("quantize", "mode", self.mode, MODES)
        one_of("quantize", "calibration_method", self.calibration_method, list(CALIBRATION_METHODS))
        one_of("quantize", "calibration", self.calibration, CALIBRATION_SOURCES)
        require(
            self.calibration != "members" or self.allow_private_calibration,
            "quantize.calibration = 'members' reads private data without DP; refused "
            "(set quantize.allow_private_calibration = true to accept epsilon = infinite)",
        )
        require(
            self.calibration_samples >= 1 and self.timing_samples >= 1,
            "quantize.calibration_samples and timing_samples must be >= 1",
        )
        require(0 <= self.max_accuracy_drop <= 1, "quantize.max_accuracy_drop must be in [0, 1]")

    @property
    def private(self) -> bool:
        """Calibration on the members (only static QDQ calibrates; auto may pick it)."""
        return self.calibration == "members" and self.mode in ("auto", "static")


@dataclass(frozen=True)
class DistillSettings(Section):
    name = "distill"
    mode: str = setting("soft", "soft (DP teacher's soft labels: free) | pate (GNMax, accounted)")
    temperature: float = setting(3.0, "soft-label temperature")
    student: str = setting("cnn", "student architecture")
    student_width: int = setting(8, "cnn channels (models that take it)")
    student_hidden: int = setting(64, "dense width (cnn, mlp)")
    epochs: int = setting(40, "student epochs")
    batch_size: int = setting(64, "batch size (student and PATE teachers)")
    lr: float = setting(3e-3, "student learning rate")
    teachers: int = setting(50, "pate: disjoint shards of the members")
    teacher_epochs: int = setting(30, "pate: epochs per teacher")
    teacher_lr: float = setting(1e-3, "pate: teacher learning rate")
    queries: int = setting(200, "pate: public examples labelled by GNMax (all answered)")
    gnmax_sigma: float = setting(20.0, "pate: GNMax noise std")
    delta: float = setting(1e-5, "pate: δ of its guarantee")

    def __post_init__(self) -> None:
        one_of("distill", "mode", self.mode, DISTILL_MODES)
        if self.student not in BASE_MODELS:
            known = ", ".join(sorted(BASE_MODELS))
            raise PrivcompError(f"distill.student '{self.student}' unknown (known: {known})")
        require(self.temperature > 0, f"distill.temperature must be > 0, got {self.temperature}")
        require(
            min(self.epochs, self.batch_size, self.student_width) >= 1,
            "distill.epochs, batch_size and student_width must be >= 1",
        )
        require(
            self.student_hidden >= 1 and self.lr > 0 and self.teacher_lr > 0,
            "distill.student_hidden must be >= 1 and distill.lr, teacher_lr > 0",
        )
        require(
            all(math.isfinite(v) for v in (self.lr, self.teacher_lr, self.temperature)),
            "distill.lr, teacher_lr and temperature must be finite numbers",
        )
        require(0 < self.delta < 1, f"distill.delta must be in (0, 1), got {self.delta}")
