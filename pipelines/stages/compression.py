"""Compression stages: `prune` (Torch-Pruning, optional fine-tune), `export` (validated ONNX with
metadata), `quantize` (int8: static / dynamic / weights-only / the fastest of them)."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from torch import nn

from compress.export import export_onnx, save_onnx, set_metadata, staged_file
from compress.onnx_io import check_onnx, load_session, run_session
from compress.prune import DATA_DRIVEN, IMPORTANCES, AfterStep, prune_model
from compress.quantize import CALIBRATION_METHODS, MODES, quantize_int8
from models.io import load_model, model_bytes, save_model
from models.training import accuracy, fit
from pipelines.artifacts import MODEL, ONNX_MODEL, artifact_hash
from pipelines.context import RunContext
from pipelines.errors import PrivcompError
from pipelines.ledger import (
    Budget,
    GaussianSteps,
    Guarantee,
    Ledger,
    compose,
    ledger_for,
)
from pipelines.stage import POST_PROCESSING, Spend, Stage, StageResult
from pipelines.stages import register_stage
from pipelines.stages.training import ladp_config
from privacy.calibration import calibrate_noise_multiplier
from privacy.ladp import LADPConfig, sampling_plan, train_ladp
from privacy.randomness import noise_description

ATTACK_METADATA_NOTE = (
    "audit statistics of the training data (members vs non-members), not covered by ε"
)
FP32_ONNX = "model.onnx"
INT8_ONNX = "model.int8.onnx"
FINETUNES = ("none", "ladp", "public")
CALIBRATION_SOURCES = ("public", "members")


def _version() -> str:
    try:
        return version("privcomp")
    except PackageNotFoundError:  # running from a source tree without installing
        return "unknown"


# ---- prune ----------------------------------------------------------------------------------


def _ladp_base(ctx: RunContext) -> LADPConfig:
    """The run's LADP settings ([train-ladp]): clip norm, batch, optimizer, secure noise."""
    return ladp_config(ctx.config["train-ladp"])


@register_stage
class Prune(Stage):
    name = "prune"
    requires = (MODEL,)
    provides = (MODEL,)
    uses_private_data = False  # by default; `finetune = "ladp"` reads the members with DP
    privacy_cost = (
        "free (l1/l2/lamp/fpgm read weights only; taylor reads the public split); "
        "optional DP fine-tune on members: composed with the training's accountant"
    )
    summary = "structural pruning (Torch-Pruning), optional fine-tune (LADP on members or public)"

    @property
    def plans_privacy(self) -> bool:
        """The ledger plans this stage before the run: a DP fine-tune checks its target."""
        return self.config["finetune"] == "ladp"

    def check(self, ctx: RunContext) -> None:
        cfg = self.config
        if not 0 < float(cfg["ratio"]) < 1:
            raise PrivcompError(f"prune.ratio must be in (0, 1), got {cfg['ratio']}")
        if cfg["importance"] not in IMPORTANCES:
            known = ", ".join(sorted(IMPORTANCES))
            raise PrivcompError(f"prune.importance '{cfg['importance']}' unknown (known: {known})")
        if int(cfg["iterative_steps"]) < 1 or int(cfg["taylor_samples"]) < 1:
            raise PrivcompError("prune.iterative_steps and prune.taylor_samples must be >= 1")
        if cfg["finetune"] not in FINETUNES:
            raise PrivcompError(f"prune.finetune must be one of {', '.join(FINETUNES)}")
        if int(cfg["finetune_epochs"]) < 1 or float(cfg["finetune_lr"]) < 0:
            raise PrivcompError("prune.finetune_epochs must be >= 1 and finetune_lr >= 0")
        if cfg["finetune"] == "ladp":
            target = float(cfg["finetune_epsilon"])
            if not (math.isfinite(target) and target > 0):
                raise PrivcompError(f"prune.finetune_epsilon must be > 0, got {target}")
            cap = Budget.from_config(ctx.config).epsilon
            if cap is not None and target > cap:
                raise PrivcompError(
                    f"prune.finetune_epsilon = {target:g} is above budget.epsilon = {cap:g}"
                )
            try:
                _ladp_base(ctx).check(len(ctx.splits["members"]))
            except ValueError as exc:
                raise PrivcompError(f"prune fine-tune: {exc}") from exc
        if cfg["importance"] in DATA_DRIVEN and len(ctx.splits["public"]) == 0:
            raise PrivcompError(f"prune.importance '{cfg['importance']}' needs a public split")

    # -- the DP fine-tune's plan

    def _finetune_shape(self, ctx: RunContext) -> tuple[float, int, int]:
        """(q, steps per fine-tune, number of fine-tunes), as train_ladp plans them."""
        batch, epochs = _ladp_base(ctx).expected_batch_size, int(self.config["finetune_epochs"])
        q, per_call = sampling_plan(batch, epochs, len(ctx.splits["members"]))
        return q, per_call, int(self.config["iterative_steps"])

    def planned_spend(self, ctx: RunContext, ledger: Ledger) -> Spend:
        if self.config["finetune"] != "ladp":
            return POST_PROCESSING
        history, accountant, delta, private = ledger.lineage_history()
        if not private:
            raise PrivcompError(
                "prune: a DP fine-tune of a model that is not private spends budget for "
                "nothing (its lineage read private data without DP); use finetune = 'public'"
            )
        if not history or delta is None:
            raise PrivcompError("prune: a DP fine-tune needs a DP-trained input (train-ladp)")
        q, per_call, calls = self._finetune_shape(ctx)
        target = float(self.config["finetune_epsilon"])
        try:
            sigma = calibrate_noise_multiplier(
                target_epsilon=target,
                delta=delta,
                sample_rate=q,
                steps=per_call * calls,
                accountant=accountant,
                history=history,
            )
        except ValueError as exc:
            raise PrivcompError(
                f"prune: finetune_epsilon = {target:g} leaves nothing to spend: {exc}"
            ) from exc
        step = GaussianSteps(sigma, q, per_call * calls)
        own = compose([step], delta=delta, accountant=accountant).epsilon
        details = {
            "noise_multiplier": sigma,
            "sample_rate": q,
            "steps": per_call * calls,
            "accountant": accountant,
            "mechanism": "ladp-finetune",
            "dataset": "members",
            "lineage": "continue",
            "target_epsilon": target,
            "noise": ctx.noise_mode,
        }
        return Spend(kind="dp", epsilon=own, delta=delta, details=details)

    # -- fine-tuning callbacks

    def _ladp_finetune(self, ctx: RunContext, planned: Spend, taken: list[int]) -> AfterStep:
        x, y = ctx.split("members")
        public_x, public_y = ctx.split("public")  # LADP's layer sensitivities: free
        sigma = float(planned.details["noise_multiplier"])
        lr = float(self.config["finetune_lr"]) or _ladp_base(ctx).lr
        config = replace(
            _ladp_base(ctx),
            epochs=int(self.config["finetune_epochs"]),
            epsilon=float(self.config["finetune_epsilon"]),
            delta=float(planned.delta or 0.0),
            accountant=str(planned.details["accountant"]),
            noise_multiplier=sigma,
            lr=lr,
        )

        def after_step(model: nn.Module, step: int, steps: int) -> None:
            with ctx.reporter.task(f"prune: DP fine-tune {step + 1}/{steps}") as progress:
                result = train_ladp(
                    model,
                    x,
                    y,
                    config=config,
                    seed=ctx.derived_seed(step),
                    noise_seed=ctx.noise_seed(step),
                    progress=progress,
                    public_x=public_x,
                    public_y=public_y,
                )
            spent = result.spend
            same = spent.sample_rate == planned.details["sample_rate"]
            if spent.noise_multiplier != sigma or not same:
                raise RuntimeError("LADP fine-tune ran another mechanism than the one planned")
            taken.append(spent.steps)

        return after_step

    def _public_finetune(self, ctx: RunContext) -> AfterStep:
        x, y = ctx.split("public")
        train = ctx.config.get("train", {})
        lr = float(self.config["finetune_lr"]) or float(train.get("lr", 1e-3))

        def after_step(model: nn.Module, step: int, steps: int) -> None:
            with ctx.reporter.task(f"prune: public fine-tune {step + 1}/{steps}") as progress:
                fit(
                    model,
                    x,
                    y,
                    epochs=int(self.config["finetune_epochs"]),
                    batch_size=int(train.get("batch_size", 64)),
                    lr=lr,
                    seed=ctx.derived_seed(step),
                    progress=progress,
                )

        return after_step

    def run(self, ctx: RunContext) -> StageResult:
        cfg = self.config
        source = ctx.artifact(MODEL)
        model, arch = load_model(source)
        public_x, public_y = ctx.split("public")
        example = torch.as_tensor(public_x[:2])
        spend: Spend = POST_PROCESSING
        planned: Spend | None = None
        taken: list[int] = []
        after_step: AfterStep | None = None
        if cfg["finetune"] == "ladp":
            ledger = ledger_for(ctx)
            planned = self.planned_spend(ctx, ledger)  # σ for the lineage this run really has
            ledger.admit(self.name, planned)
            after_step = self._ladp_finetune(ctx, planned, taken)
        elif cfg["finetune"] == "public":
            after_step = self._public_finetune(ctx)
        importance_data = None
        if cfg["importance"] in DATA_DRIVEN:
            importance_data = ctx.sample("public", int(cfg["taylor_samples"]))
        try:
            result = prune_model(
                model,
                example,
                ratio=float(cfg["ratio"]),
                importance=str(cfg["importance"]),
                global_pruning=bool(cfg["global_pruning"]),
                iterative_steps=int(cfg["iterative_steps"]),
                importance_data=importance_data,
                after_step=after_step,
            )
        except (KeyError, ValueError) as exc:
            raise PrivcompError(f"prune: {exc}") from exc
        save_model(model, ctx.stage_dir, arch=arch)
        metrics: dict[str, Any] = {
            "params_before": result.params_before,
            "params_after": result.params_after,
            "macs_before": result.macs_before,
            "macs_after": result.macs_after,
            "bytes_before": model_bytes(source),
            "bytes_after": model_bytes(ctx.stage_dir),
            "importance": cfg["importance"],
            "global_pruning": bool(cfg["global_pruning"]),
            "iterative_steps": result.steps,
            "finetune": cfg["finetune"],
        }
        if planned is not None:
            spend, finetune = self._finetune_spend(ctx, planned, sum(taken))
            metrics["finetune_dp"] = finetune
        return StageResult({MODEL: ctx.stage_dir}, spend, metrics)

    def _finetune_spend(
        self, ctx: RunContext, planned: Spend, steps: int
    ) -> tuple[Spend, dict[str, Any]]:
        """The spend of the steps really taken (never more than planned), and its record."""
        d = planned.details
        delta = float(planned.delta or 0.0)
        step = GaussianSteps(float(d["noise_multiplier"]), float(d["sample_rate"]), steps)
        own = compose([step], delta=delta, accountant=str(d["accountant"])).epsilon
        details = {**d, "steps": steps}
        history, accountant, _, _ = ledger_for(ctx).lineage_history()
        composed = compose([*history, step], delta=delta, accountant=accountant).epsilon
        record = {
            "noise_multiplier": step.noise_multiplier,
            "sample_rate": step.sample_rate,
            "steps": steps,
            "steps_planned": int(d["steps"]),
            "epsilon_alone": own,
            "epsilon_composed": composed,
            "target_epsilon": d["target_epsilon"],
        }
        return Spend(kind="dp", epsilon=own, delta=delta, details=details), record


# ---- ONNX metadata --------------------------------------------------------------------------


def strongest_attack(ctx: RunContext, name: str, path: Path) -> dict[str, Any] | None:
    """The strongest attack the runner measured on exactly this artifact (same hash), if any:
    the highest AUC and the highest TPR at 0.1% FPR, each with the attack's name."""
    digest = artifact_hash(name, path)
    # The runner keys its measurements "<artifact hash>:<attacked|plain>".
    found = [
        m for k, m in ctx.measurements.items() if str(k).startswith(digest) and m.get("attacks")
    ]
    if not found:
        return None
    attacks: dict[str, dict[str, Any]] = found[0]["attacks"]
    inside = path.is_relative_to(ctx.run_dir)
    auc = max(attacks.items(), key=lambda kv: float(kv[1]["auc"]))
    tpr = max(attacks.items(), key=lambda kv: float(kv[1]["tpr_at_0_1pct_fpr"]))
    return {
        "auc": float(auc[1]["auc"]),
        "auc_attack": auc[0],
        "tpr_at_0_1pct_fpr": float(tpr[1]["tpr_at_0_1pct_fpr"]),
        "tpr_attack": tpr[0],
        "measured_on": str(path.relative_to(ctx.run_dir) if inside else path),
    }


def onnx_metadata(
    ctx: RunContext,
    *,
    stage: str,
    guarantee: Guarantee | None,
    test_accuracy: float,
    attack: dict[str, Any] | None,
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
    }
    if bool(ctx.config["export"]["attack_metadata"]):
        attack = attack or {}
        meta.update(
            {
                "privcomp.attack.note": ATTACK_METADATA_NOTE,
                "privcomp.attack.auc": attack.get("auc"),
                "privcomp.attack.auc_attack": attack.get("auc_attack"),
                "privcomp.attack.tpr_at_0_1pct_fpr": attack.get("tpr_at_0_1pct_fpr"),
                "privcomp.attack.tpr_attack": attack.get("tpr_attack"),
                "privcomp.attack.measured_on": attack.get("measured_on"),
            }
        )
    meta.update(extra or {})
    return {k: json.dumps(v) for k, v in meta.items()}


def _export(ctx: RunContext, path: Path, *, stage: str) -> dict[str, Any]:
    """Export the latest torch model with its metadata; metrics of the check."""
    source = ctx.artifact(MODEL)
    model, _ = load_model(source)
    test_x, test_y = ctx.split("test")
    attack = strongest_attack(ctx, MODEL, source)
    tolerance = float(ctx.config["export"]["tolerance"])

    def metadata(outputs: np.ndarray) -> dict[str, str]:
        return onnx_metadata(
            ctx,
            stage=stage,
            guarantee=ctx.guarantee,
            test_accuracy=accuracy(outputs, test_y),
            attack=attack,
        )

    try:
        result = export_onnx(
            model,
            path,
            example_input=torch.as_tensor(test_x[:2]),
            check_inputs=test_x,
            metadata_from_outputs=metadata,
            tolerance=tolerance,
        )
    except ValueError as exc:
        raise PrivcompError(f"{stage}: {exc}") from exc
    return {
        "max_abs_diff_vs_torch": result.max_abs_diff,
        "logit_scale": result.logit_scale,
        "attack_metadata_from": attack["measured_on"] if attack else None,
    }


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
        path = ctx.stage_dir / FP32_ONNX
        metrics = _export(ctx, path, stage=self.name)
        return StageResult({ONNX_MODEL: path}, POST_PROCESSING, metrics)


# ---- quantize -------------------------------------------------------------------------------


@register_stage
class Quantize(Stage):
    name = "quantize"
    requires = (f"{MODEL}|{ONNX_MODEL}",)
    provides = (ONNX_MODEL,)
    uses_private_data = False  # calibration reads the public split unless explicitly allowed
    privacy_cost = "free: int8 calibration reads only the public split (members: refused)"
    summary = "ONNX Runtime int8 (auto: the fastest of static QDQ, dynamic, weights-only)"

    def _private(self) -> bool:
        return self.config["calibration"] == "members" and self.config["mode"] in (
            "auto",
            "static",
        )

    def check(self, ctx: RunContext) -> None:
        cfg = self.config
        if cfg["mode"] not in MODES:
            raise PrivcompError(f"quantize.mode must be one of {', '.join(MODES)}")
        if cfg["calibration_method"] not in CALIBRATION_METHODS:
            known = ", ".join(CALIBRATION_METHODS)
            raise PrivcompError(f"quantize.calibration_method must be one of {known}")
        if cfg["calibration"] not in CALIBRATION_SOURCES:
            raise PrivcompError("quantize.calibration must be 'public' or 'members'")
        if cfg["calibration"] == "members" and not cfg["allow_private_calibration"]:
            raise PrivcompError(
                "quantize.calibration = 'members' reads private data without DP; refused "
                "(set quantize.allow_private_calibration = true to accept epsilon = infinite)"
            )
        if int(cfg["calibration_samples"]) < 1 or int(cfg["timing_samples"]) < 1:
            raise PrivcompError("quantize.calibration_samples and timing_samples must be >= 1")
        if not 0 <= float(cfg["max_accuracy_drop"]) <= 1:
            raise PrivcompError("quantize.max_accuracy_drop must be in [0, 1]")
        if len(ctx.splits["public"]) == 0:
            raise PrivcompError("quantize needs a public split (calibration and timing)")

    def planned_spend(self, ctx: RunContext, ledger: Ledger) -> Spend:
        if not self._private():
            return POST_PROCESSING
        details = {
            "dataset": "members",
            "lineage": "continue",
            "mechanism": "int8 calibration on the members, no DP",
        }
        return Spend(kind="none", details=details)

    def run(self, ctx: RunContext) -> StageResult:
        cfg = self.config
        spend = self.planned_spend(ctx, Ledger())
        if spend.kind == "none":
            # A finite budget refuses it (check_budget already did, for a run); the ledger
            # warns when it records this spend.
            ledger_for(ctx).admit(self.name, spend)
        metrics: dict[str, Any] = {}
        if ctx.latest == ONNX_MODEL:
            fp32 = ctx.artifact(ONNX_MODEL)
            attacked = strongest_attack(ctx, ONNX_MODEL, fp32)
        else:
            fp32 = ctx.stage_dir / FP32_ONNX
            metrics.update(_export(ctx, fp32, stage=self.name))
            attacked = strongest_attack(ctx, MODEL, ctx.artifact(MODEL))
        calibration = None
        if cfg["mode"] in ("auto", "static"):
            source = "members" if cfg["calibration"] == "members" else "public"
            calibration = ctx.sample(source, int(cfg["calibration_samples"]))[0]
        timing = ctx.sample("public", int(cfg["timing_samples"]))
        try:
            result = quantize_int8(
                fp32,
                ctx.stage_dir / INT8_ONNX,
                mode=str(cfg["mode"]),
                calibration=calibration,
                per_channel=bool(cfg["per_channel"]),
                method=str(cfg["calibration_method"]),
                timing_data=timing,
                max_accuracy_drop=float(cfg["max_accuracy_drop"]),
            )
        except ValueError as exc:
            raise PrivcompError(f"quantize: {exc}") from exc
        guarantee = ctx.guarantee if spend.kind != "none" else Guarantee(None, None)
        test_accuracy = self._stamp(ctx, result.path, guarantee, attacked, result.mode)
        metrics.update(
            {
                **result.to_metrics(),
                "calibration": cfg["calibration"] if calibration is not None else "none",
                "fp32_onnx_bytes": fp32.stat().st_size,
                "int8_onnx_bytes": result.path.stat().st_size,
                "int8_test_accuracy": test_accuracy,
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
        proto = onnx.load(str(path))
        set_metadata(
            proto,
            onnx_metadata(
                ctx,
                stage=self.name,
                guarantee=guarantee,
                test_accuracy=test_accuracy,
                attack=attacked,
                extra={"privcomp.quantization": mode},
            ),
        )
        with staged_file(path) as tmp:
            save_onnx(proto, tmp)
            check_onnx(tmp)
        return test_accuracy
