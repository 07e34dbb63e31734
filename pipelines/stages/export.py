"""The `export` stage: the latest torch model as a validated fp32 ONNX file (compress.export) that
carries its guarantee, noise mode, accuracy and history."""

from __future__ import annotations

import math

from pipelines.artifacts import MODEL, ONNX_MODEL
from pipelines.compressing import RECORD_KEY, export_latest, save_record
from pipelines.context import RunContext
from pipelines.errors import PrivcompError
from pipelines.stage import POST_PROCESSING, Stage, StageResult
from pipelines.stages import register_stage


@register_stage
class Export(Stage):
    name = "export"
    requires = (MODEL,)
    provides = (ONNX_MODEL,)
    uses_private_data = False
    privacy_cost = "free: a format change, validated against torch on the test split"
    summary = "fp32 ONNX export, fully checked, compared with torch; ε, noise mode, accuracy inside"

    def check(self, ctx: RunContext) -> None:
        tolerance = float(ctx.config["export"]["tolerance"])
        if not (math.isfinite(tolerance) and tolerance > 0):
            raise PrivcompError(f"export.tolerance must be > 0, got {tolerance}")
        if len(ctx.splits["test"]) == 0:
            raise PrivcompError("export compares ONNX with torch on the test split: it is empty")

    def run(self, ctx: RunContext) -> StageResult:
        exported, metrics = export_latest(ctx, ctx.stage_dir, stage=self.name)
        metrics[RECORD_KEY] = save_record(ctx, {"export": exported.record()})
        return StageResult({ONNX_MODEL: exported.path}, POST_PROCESSING, metrics)
