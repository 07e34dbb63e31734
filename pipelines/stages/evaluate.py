"""`evaluate`: the auditor. Attacks the latest artifact; it changes nothing."""

from __future__ import annotations

from pipelines.artifacts import MODEL, ONNX_MODEL
from pipelines.context import RunContext
from pipelines.evaluation import check_evaluate_config
from pipelines.stage import POST_PROCESSING, Stage, StageResult
from pipelines.stages import register_stage


@register_stage
class Evaluate(Stage):
    name = "evaluate"
    requires = (f"{MODEL}|{ONNX_MODEL}",)
    provides = ()
    uses_private_data = True  # it measures leakage of the members; its numbers are not shipped
    privacy_cost = (
        "none: an audit for the data owner; its numbers stay in the run dir (in an ONNX file "
        "only with export.attack_metadata, labelled as not covered by epsilon)"
    )
    summary = "membership-inference attacks, accuracy and size of the latest artifact"

    def check(self, ctx: RunContext) -> None:
        check_evaluate_config(ctx.config["evaluate"])

    def run(self, ctx: RunContext) -> StageResult:
        # The runner measures the latest artifact after this stage, with attacks (cached when
        # the same artifact was already attacked after the stage that produced it).
        return StageResult({}, POST_PROCESSING, {"audited": ctx.latest})
