"""The `quantize` stage: int8 with ONNX Runtime (compress.quantize), calibrated on the public split
unless the user explicitly accepts a non-private model; exports the latest torch model first."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from compress.export import write_metadata
from compress.quantize import QuantizeSettings, quantize
from models.onnx_io import load_session, run_session
from models.training import accuracy
from pipelines.artifacts import MODEL, ONNX_MODEL
from pipelines.compressing import (
    RECORD_KEY,
    STATIC_MODES,
    export_latest,
    quantize_data,
    quantize_record,
    save_record,
)
from pipelines.context import RunContext
from pipelines.errors import PrivcompError
from pipelines.onnx_metadata import onnx_metadata, strongest_attack
from pipelines.privacy_card import write_privacy_card
from pipelines.settings.compression import QuantizeSettings as QuantizeStageSettings
from pipelines.spend import Guarantee
from pipelines.stage import POST_PROCESSING, Spend, Stage, StageResult, register_stage


@register_stage
class Quantize(Stage[QuantizeStageSettings]):
    name = "quantize"
    requires = (f"{MODEL}|{ONNX_MODEL}",)
    provides = (ONNX_MODEL,)
    privacy_cost = "free: int8 calibration reads only the public split (members: refused)"
    summary = "ONNX Runtime int8 (auto: the fastest of static QDQ, dynamic, weights-only)"
    Config = QuantizeStageSettings

    def check(self, ctx: RunContext) -> None:
        if len(ctx.splits["public"]) == 0:
            raise PrivcompError("quantize needs a public split (calibration and timing)")

    def planned_spend(self, ctx: RunContext) -> Spend:
        if not self.config.private:
            return POST_PROCESSING
        details = {"mechanism": "int8 calibration on the members, no DP"}
        return Spend(kind="none", lineage="continue", details=details)

    def _settings(self) -> QuantizeSettings:
        cfg = self.config
        return QuantizeSettings(
            mode=cfg.mode,
            per_channel=cfg.per_channel,
            calibration_method=cfg.calibration_method,
            max_accuracy_drop=cfg.max_accuracy_drop,
        )

    def run(self, ctx: RunContext) -> StageResult:
        cfg = self.config
        spend = ctx.planned_spend()  # kind "none" on the members: the ledger warns
        metrics: dict[str, Any] = {}
        record: dict[str, Any] = {}
        if ctx.latest == ONNX_MODEL:
            fp32 = ctx.artifact(ONNX_MODEL)
            attacked = strongest_attack(ctx, ONNX_MODEL, fp32)
        else:
            exported, exported_metrics = export_latest(
                ctx, ctx.stage_dir, stage=self.name, export_settings=self.config.export
            )
            fp32, record["export"] = exported.path, exported.record()
            metrics.update(exported_metrics)
            attacked = strongest_attack(ctx, MODEL, ctx.artifact(MODEL))
        calibration = "none"
        if cfg.mode in STATIC_MODES:
            calibration = "members" if cfg.calibration == "members" else "public"
        samples = cfg.calibration_samples
        timing = cfg.timing_samples if cfg.mode == "auto" else None
        data = quantize_data(
            ctx, calibration=calibration, calibration_samples=samples, timing_samples=timing
        )
        try:
            result = quantize(fp32, ctx.stage_dir, settings=self._settings(), data=data)
        except ValueError as exc:
            raise PrivcompError(f"quantize: {exc}") from exc
        record["quantize"] = quantize_record(
            result, calibration=calibration, calibration_samples=samples
        )
        guarantee = ctx.guarantee if spend.kind != "none" else Guarantee(None, None)
        test_accuracy = self._stamp(ctx, result.path, guarantee, attacked, result.mode)
        # One card for the folder: the fp32 export (when this stage made it) and the int8 file.
        files = [fp32, result.path] if fp32.parent == ctx.stage_dir else [result.path]
        write_privacy_card(ctx, stage=self.name, files=files, spend=spend, record=record)
        metrics.update(
            {
                **result.to_metrics(),
                "calibration": cfg.calibration if calibration != "none" else "none",
                "fp32_onnx_bytes": fp32.stat().st_size,
                "int8_onnx_bytes": result.path.stat().st_size,
                "int8_test_accuracy": test_accuracy,
                RECORD_KEY: save_record(ctx, record),
            }
        )
        return StageResult({ONNX_MODEL: result.path}, spend, metrics)

    def _stamp(
        self,
        ctx: RunContext,
        path: Path,
        guarantee: Guarantee | None,
        attacked: dict[str, Any] | None,
        mode: str,
    ) -> float:
        """Write the int8 file's own metadata (its accuracy, the guarantee after this stage)."""
        test_x, test_y = ctx.split("test")
        test_accuracy = accuracy(run_session(load_session(path), test_x), test_y)
        metadata = onnx_metadata(
            ctx,
            stage=self.name,
            guarantee=guarantee,
            test_accuracy=test_accuracy,
            attack=attacked,
            attack_metadata=self.config.export.attack_metadata,
            extra={"privcomp.quantization": mode},
        )
        write_metadata(path, metadata)
        return test_accuracy
