"""Compression stages: `prune` (Torch-Pruning), `export` (validated ONNX), `quantize` (int8)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from compress.export import export_onnx
from compress.prune import prune_model
from compress.quantize import quantize_static_int8
from models.io import load_model, model_bytes, save_model
from pipelines.artifacts import MODEL, ONNX_MODEL
from pipelines.context import RunContext
from pipelines.errors import PrivcompError
from pipelines.stage import POST_PROCESSING, Stage, StageResult
from pipelines.stages import register_stage

FP32_ONNX = "model.onnx"
INT8_ONNX = "model.int8.onnx"


@register_stage
class Prune(Stage):
    name = "prune"
    requires = (MODEL,)
    provides = (MODEL,)
    uses_private_data = False
    privacy_cost = "free: magnitude pruning is post-processing"
    summary = "structural pruning (Torch-Pruning, magnitude importance); classifier kept"

    def check(self, ctx: RunContext) -> None:
        if not 0 < float(self.config["ratio"]) < 1:
            raise PrivcompError(f"prune.ratio must be in (0, 1), got {self.config['ratio']}")

    def run(self, ctx: RunContext) -> StageResult:
        source = ctx.artifact(MODEL)
        model, arch = load_model(source)
        example = torch.as_tensor(ctx.split("public")[0][:2])
        try:
            result = prune_model(
                model,
                example,
                ratio=float(self.config["ratio"]),
                importance=str(self.config["importance"]),
            )
        except (KeyError, ValueError) as exc:
            raise PrivcompError(f"prune: {exc}") from exc
        save_model(model, ctx.stage_dir, arch=arch)
        metrics = {
            "params_before": result.params_before,
            "params_after": result.params_after,
            "bytes_before": model_bytes(source),
            "bytes_after": model_bytes(ctx.stage_dir),
        }
        return StageResult({MODEL: ctx.stage_dir}, POST_PROCESSING, metrics)


def _metadata(ctx: RunContext) -> dict[str, str]:
    """Properties carried inside the ONNX file, so a deployed model says what it promises."""
    guarantee = ctx.guarantee
    return {
        "privcomp.epsilon": json.dumps(guarantee.epsilon if guarantee else None),
        "privcomp.delta": json.dumps(guarantee.delta if guarantee else None),
        "privcomp.stages": json.dumps(ctx.history),
        "privcomp.dataset": ctx.dataset.name,
    }


def _export(ctx: RunContext, path: Path) -> float:
    model, _ = load_model(ctx.artifact(MODEL))
    check = ctx.split("test")[0][:256]
    result = export_onnx(
        model,
        path,
        example_input=torch.as_tensor(check[:2]),
        check_inputs=check,
        metadata=_metadata(ctx),
    )
    return result.max_abs_diff


@register_stage
class Export(Stage):
    name = "export"
    requires = (MODEL,)
    provides = (ONNX_MODEL,)
    uses_private_data = False
    privacy_cost = "free: a format change, validated against torch on the test split"
    summary = "fp32 ONNX export, fully checked, outputs compared with torch"

    def run(self, ctx: RunContext) -> StageResult:
        path = ctx.stage_dir / FP32_ONNX
        diff = _export(ctx, path)
        return StageResult({ONNX_MODEL: path}, POST_PROCESSING, {"max_abs_diff_vs_torch": diff})


@register_stage
class Quantize(Stage):
    name = "quantize"
    requires = (f"{MODEL}|{ONNX_MODEL}",)
    provides = (ONNX_MODEL,)
    uses_private_data = False
    privacy_cost = "free: int8 calibration reads only the public split"
    summary = "ONNX Runtime static int8 (QDQ), calibrated on the public split"

    def run(self, ctx: RunContext) -> StageResult:
        metrics: dict[str, float] = {}
        if ctx.latest == ONNX_MODEL:
            fp32 = ctx.artifact(ONNX_MODEL)
        else:
            fp32 = ctx.stage_dir / FP32_ONNX
            metrics["max_abs_diff_vs_torch"] = _export(ctx, fp32)
        public_x = ctx.split("public")[0]
        n = min(int(self.config["calibration_samples"]), len(public_x))
        calibration = public_x[np.random.default_rng(ctx.seed).permutation(len(public_x))[:n]]
        out = quantize_static_int8(
            fp32,
            ctx.stage_dir / INT8_ONNX,
            calibration=calibration,
            per_channel=bool(self.config["per_channel"]),
        )
        metrics["fp32_onnx_bytes"] = fp32.stat().st_size
        metrics["int8_onnx_bytes"] = out.stat().st_size
        return StageResult({ONNX_MODEL: out}, POST_PROCESSING, metrics)
