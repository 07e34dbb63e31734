"""How a run applies the compress/ transforms, for a stage and for the evaluation's mirror of it.

- the data each transform reads, drawn one way (ctx.sample: the run's seeded order), so that a
  mirrored reference is compressed on exactly the examples the target was;
- the torch -> ONNX export that `export` and `quantize` share;
- the record of what each transform chose, which the stage writes to compression.json in its
  folder and returns as metrics["compression"], and which the mirror replays:

      {"prune":    {"settings", "history", "structure", "data": {"importance_samples"}, "finetune"},
       "export":   {"settings", "max_abs_diff", "logit_scale"},
       "quantize": {"settings", "mode", "timings_ms", "timing_accuracy", "rejected",
                    "data": {"calibration", "calibration_samples"}}}

  A stage records the blocks of the transforms it ran (quantize: "export" too when its input
  was a torch model).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

import numpy as np

from compress.export import ExportData, ExportedArtifact, ExportSettings, export
from compress.prune import PrunedArtifact, PruneData, PruneSettings
from compress.quantize import QuantizedArtifact, QuantizeData, QuantizeSettings
from models.training import accuracy
from pipelines.artifacts import MODEL
from pipelines.context import RunContext
from pipelines.errors import PrivcompError
from pipelines.onnx_metadata import onnx_metadata, strongest_attack
from pipelines.rundir import write_json
from pipelines.settings.compression import ExportSettings as ExportStageSettings

RECORD_FILE = "compression.json"
RECORD_KEY = "compression"  # the record's key in a compression stage's metrics
STATIC_MODES = ("auto", "static")  # the modes that read a calibration sample

S = TypeVar("S")  # a transform's settings
D = TypeVar("D")  # a transform's data


# ---- the data each transform reads ----------------------------------------------------------


def prune_data(ctx: RunContext, *, importance_samples: int | None) -> PruneData:
    """Two public inputs trace the graph; a data-driven criterion scores channels on the public
    sample of importance_samples (None: the criterion reads no data)."""
    public_x, _ = ctx.split("public")
    sample = None if importance_samples is None else ctx.sample("public", importance_samples)
    return PruneData(example=public_x[:2], importance=sample)


def export_data(ctx: RunContext) -> ExportData:
    """ONNX is compared with torch on the whole test split."""
    test_x, _ = ctx.split("test")
    return ExportData(example=test_x[:2], check=test_x)


def quantize_data(
    ctx: RunContext, *, calibration: str, calibration_samples: int, timing_samples: int | None
) -> QuantizeData:
    """calibration: the split static int8 calibrates on ("public", or "members" when the user
    allowed it), or "none" for a mode that reads none; timing: auto's public sample."""
    images = None if calibration == "none" else ctx.sample(calibration, calibration_samples)[0]
    timing = None if timing_samples is None else ctx.sample("public", timing_samples)
    return QuantizeData(calibration=images, timing=timing)


# ---- the export that export and quantize share ----------------------------------------------


def export_latest(
    ctx: RunContext, out_dir: Path, *, stage: str, export_settings: ExportStageSettings
) -> tuple[ExportedArtifact, dict[str, Any]]:
    """Export the latest torch model with its metadata; the artifact and the check's metrics."""
    source = ctx.artifact(MODEL)
    _, test_y = ctx.split("test")
    attack = strongest_attack(ctx, MODEL, source)
    settings = ExportSettings(tolerance=export_settings.tolerance)

    def metadata(outputs: np.ndarray) -> dict[str, str]:
        return onnx_metadata(
            ctx,
            stage=stage,
            guarantee=ctx.guarantee,
            test_accuracy=accuracy(outputs, test_y),
            attack=attack,
            attack_metadata=export_settings.attack_metadata,
        )

    try:
        data = export_data(ctx)
        artifact = export(
            source, out_dir, settings=settings, data=data, metadata_from_outputs=metadata
        )
    except ValueError as exc:
        raise PrivcompError(f"{stage}: {exc}") from exc
    metrics = {
        "max_abs_diff_vs_torch": artifact.max_abs_diff,
        "logit_scale": artifact.logit_scale,
        "attack_metadata_from": (
            attack["measured_on"] if attack and export_settings.attack_metadata else None
        ),
    }
    return artifact, metrics


# ---- records: written by the stages ---------------------------------------------------------


def prune_record(
    artifact: PrunedArtifact, *, importance_samples: int | None, finetune: str
) -> dict[str, Any]:
    data = {"importance_samples": importance_samples}
    return {**artifact.record(), "data": data, "finetune": finetune}


def quantize_record(
    artifact: QuantizedArtifact, *, calibration: str, calibration_samples: int
) -> dict[str, Any]:
    data = {"calibration": calibration, "calibration_samples": calibration_samples}
    return {**artifact.record(), "data": data}


def save_record(ctx: RunContext, record: dict[str, Any]) -> dict[str, Any]:
    """Write the stage's record next to its artifact; returned for the stage's metrics."""
    write_json(ctx.stage_dir / RECORD_FILE, record)
    return record


# ---- records: replayed by the mirror --------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Replay(Generic[S, D]):
    """One transform as a stage recorded it: the settings and data that redo it, and `key`, the
    JSON of what the replay depends on (a mirror is cached against it)."""

    settings: S
    data: D
    key: dict[str, Any]


def replay_prune(ctx: RunContext, record: dict[str, Any]) -> Replay[PruneSettings, PruneData]:
    """The recorded settings and public sample; each model ranks its own channels with them."""
    settings = PruneSettings(**record["settings"])
    samples = record["data"]["importance_samples"]
    key = {"settings": record["settings"], "importance_samples": samples}
    return Replay(settings, prune_data(ctx, importance_samples=samples), key)


def replay_export(ctx: RunContext, record: dict[str, Any]) -> Replay[ExportSettings, ExportData]:
    return Replay(ExportSettings(**record["settings"]), export_data(ctx), dict(record["settings"]))


def replay_quantize(
    ctx: RunContext, record: dict[str, Any]
) -> Replay[QuantizeSettings, QuantizeData]:
    """The mode the stage kept (never auto again: its timing was the target machine's), on the
    public calibration sample of the recorded size when that mode is static."""
    settings = QuantizeSettings(**{**record["settings"], "mode": record["mode"]})
    samples = int(record["data"]["calibration_samples"])
    calibration = "public" if settings.mode in STATIC_MODES else "none"
    data = quantize_data(
        ctx, calibration=calibration, calibration_samples=samples, timing_samples=None
    )
    key: dict[str, Any] = {"settings": asdict(settings)}
    if calibration != "none":
        key["calibration_samples"] = samples
    return Replay(settings, data, key)
