"""The `export` stage: the latest torch model as a validated fp32 ONNX file (compress.export) that
carries its guarantee, noise mode, accuracy and history, with its privacy card beside it."""

from __future__ import annotations

from pipelines.artifacts import MODEL, ONNX_MODEL
from pipelines.compressing import RECORD_KEY, export_latest, save_record
from pipelines.context import RunContext
from pipelines.errors import PrivcompError
from pipelines.privacy_card import write_privacy_card
from pipelines.settings.compression import ExportSettings
from pipelines.stage import POST_PROCESSING, Spend, Stage, StageResult, register_stage


@register_stage
class Export(Stage[ExportSettings]):
    name = "export"
    requires = (MODEL,)
    provides = (ONNX_MODEL,)
    privacy_cost = "free: a format change, validated against torch on the test split"
    summary = "fp32 ONNX export, fully checked, compared with torch; ε, noise mode, accuracy inside"
    Config = ExportSettings

    def planned_spend(self, ctx: RunContext) -> Spend:
        return POST_PROCESSING

    def check(self, ctx: RunContext) -> None:
        if len(ctx.splits["test"]) == 0:
            raise PrivcompError("export compares ONNX with torch on the test split: it is empty")

    def run(self, ctx: RunContext) -> StageResult:
        exported, metrics = export_latest(
            ctx, ctx.stage_dir, stage=self.name, export_settings=self.config
        )
        record = {"export": exported.record()}
        metrics[RECORD_KEY] = save_record(ctx, record)
        write_privacy_card(
            ctx, stage=self.name, files=[exported.path], spend=POST_PROCESSING, record=record
        )
        return StageResult({ONNX_MODEL: exported.path}, POST_PROCESSING, metrics)
