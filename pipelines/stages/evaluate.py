"""`evaluate`: the auditor's final word on the latest artifact. It runs every attack of
evaluate.audit_attacks on it (those the runner already measured on the same file are reused) and
changes nothing: its attacks join that artifact's row of the summary."""

from __future__ import annotations

from pipelines.artifacts import MODEL, ONNX_MODEL
from pipelines.context import RunContext
from pipelines.evaluation import measure
from pipelines.settings.evaluation import EvaluateSettings
from pipelines.stage import POST_PROCESSING, Spend, Stage, StageResult, register_stage


@register_stage
class Evaluate(Stage[EvaluateSettings]):
    name = "evaluate"
    requires = (f"{MODEL}|{ONNX_MODEL}",)
    provides = ()
    privacy_cost = (
        "none: an audit for the data owner; its numbers stay in the run dir (in an ONNX file "
        "only with export.attack_metadata, labelled as not covered by epsilon)"
    )
    summary = "every attack of evaluate.audit_attacks on the latest artifact"
    Config = EvaluateSettings

    @property
    def audit_attacks(self) -> tuple[str, ...]:
        return tuple(self.config.audit_attacks)

    def planned_spend(self, ctx: RunContext) -> Spend:
        return POST_PROCESSING  # its numbers go to the data owner, never into an artifact

    def run(self, ctx: RunContext) -> StageResult:
        assert ctx.latest is not None
        path = ctx.artifact(ctx.latest)
        measured = measure(ctx, ctx.latest, path, attacks=list(self.audit_attacks))
        audited = str(path.relative_to(ctx.run_dir))
        return StageResult({}, POST_PROCESSING, {"audited": audited, "artifact": measured.artifact})
