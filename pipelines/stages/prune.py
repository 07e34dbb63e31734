"""The `prune` stage: structural pruning (compress.prune) and its optional fine-tune, either LADP
on the members (DP, composed with the training's accountant) or plain on the public split."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from torch import nn

from compress.prune import DATA_DRIVEN, AfterStep, PruneSettings, prune
from models.io import model_bytes
from models.training import fit
from models.zoo import trainable_part
from pipelines.artifacts import MODEL
from pipelines.compressing import RECORD_KEY, prune_data, prune_record, save_record
from pipelines.context import RunContext
from pipelines.errors import PrivcompError
from pipelines.settings.compression import PruneSettings as PruneStageSettings
from pipelines.stage import POST_PROCESSING, Spend, Stage, StageResult, register_stage
from privacy.calibration import calibrate_noise_multiplier
from privacy.composition import GaussianSteps, compose
from privacy.config import sampling_plan
from privacy.ladp import train_ladp


@register_stage
class Prune(Stage[PruneStageSettings]):
    name = "prune"
    requires = (MODEL,)
    provides = (MODEL,)
    privacy_cost = (
        "free (l1/l2/lamp/fpgm read weights only; taylor reads the public split); "
        "optional DP fine-tune on members: composed with the training's accountant"
    )
    summary = "structural pruning (Torch-Pruning), optional fine-tune (LADP on members or public)"

    Config = PruneStageSettings

    def check(self, ctx: RunContext) -> None:
        cfg = self.config
        if cfg.finetune == "ladp":
            cap = ctx.config.budget.epsilon
            if cap and cfg.finetune_epsilon > cap:
                raise PrivcompError(
                    f"prune.finetune_epsilon = {cfg.finetune_epsilon:g} is above "
                    f"budget.epsilon = {cap:g}"
                )
            try:
                cfg.dp_recipe.check(len(ctx.splits["members"]))
            except ValueError as exc:
                raise PrivcompError(f"prune fine-tune: {exc}") from exc
        if cfg.importance in DATA_DRIVEN and len(ctx.splits["public"]) == 0:
            raise PrivcompError(f"prune.importance '{cfg.importance}' needs a public split")

    # -- the DP fine-tune's plan

    def _finetune_shape(self, ctx: RunContext) -> tuple[float, int, int]:
        """(q, steps per fine-tune, number of fine-tunes), as train_ladp plans them."""
        batch, epochs = self.config.dp_recipe.expected_batch_size, int(self.config.finetune_epochs)
        q, per_call = sampling_plan(batch, epochs, len(ctx.splits["members"]))
        return q, per_call, int(self.config.iterative_steps)

    def planned_spend(self, ctx: RunContext) -> Spend:
        if self.config.finetune != "ladp":
            return POST_PROCESSING
        history, accountant, delta, private = ctx.ledger.lineage_history()
        if not private:
            raise PrivcompError(
                "prune: a DP fine-tune of a model that is not private spends budget for "
                "nothing (its lineage read private data without DP); use finetune = 'public'"
            )
        if not history or delta is None:
            raise PrivcompError("prune: a DP fine-tune needs a DP-trained input (train-ladp)")
        q, per_call, calls = self._finetune_shape(ctx)
        target = float(self.config.finetune_epsilon)
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
            "target_epsilon": target,
            "noise": ctx.noise_mode,
        }
        return Spend(kind="dp", epsilon=own, delta=delta, lineage="continue", details=details)

    # -- fine-tuning callbacks

    def _ladp_finetune(self, ctx: RunContext, planned: Spend, taken: list[int]) -> AfterStep:
        x, y = ctx.split("members")
        public_x, public_y = ctx.split("public")  # LADP's layer sensitivities: free
        sigma = float(planned.details["noise_multiplier"])
        lr = float(self.config.finetune_lr) or self.config.dp_recipe.lr
        config = replace(
            self.config.dp_recipe,
            epochs=int(self.config.finetune_epochs),
            epsilon=float(self.config.finetune_epsilon),
            delta=float(planned.delta or 0.0),
            accountant=str(planned.details["accountant"]),
            noise_multiplier=sigma,
            lr=lr,
        )

        def after_step(model: nn.Module, step: int, steps: int) -> None:
            with ctx.reporter.task(f"prune: DP fine-tune {step + 1}/{steps}") as progress:
                result = train_ladp(
                    trainable_part(model),
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
        train = self.config.public_recipe
        lr = self.config.finetune_lr or train.lr

        def after_step(model: nn.Module, step: int, steps: int) -> None:
            with ctx.reporter.task(f"prune: public fine-tune {step + 1}/{steps}") as progress:
                fit(
                    trainable_part(model),
                    x,
                    y,
                    epochs=int(self.config.finetune_epochs),
                    batch_size=train.batch_size,
                    lr=lr,
                    seed=ctx.derived_seed(step),
                    progress=progress,
                )

        return after_step

    def _settings(self) -> PruneSettings:
        cfg = self.config
        return PruneSettings(
            ratio=cfg.ratio,
            importance=cfg.importance,
            global_pruning=cfg.global_pruning,
            iterative_steps=cfg.iterative_steps,
        )

    def run(self, ctx: RunContext) -> StageResult:
        cfg = self.config
        source = ctx.artifact(MODEL)
        spend: Spend = POST_PROCESSING
        planned: Spend | None = None
        taken: list[int] = []
        after_step: AfterStep | None = None
        if cfg.finetune == "ladp":
            planned = ctx.planned_spend()  # σ for the lineage this run really has
            after_step = self._ladp_finetune(ctx, planned, taken)
        elif cfg.finetune == "public":
            after_step = self._public_finetune(ctx)
        samples = cfg.taylor_samples if cfg.importance in DATA_DRIVEN else None
        settings = self._settings()
        data = prune_data(ctx, importance_samples=samples)
        try:
            pruned = prune(
                source, ctx.stage_dir, settings=settings, data=data, after_step=after_step
            )
        except (KeyError, ValueError) as exc:
            raise PrivcompError(f"prune: {exc}") from exc
        result = pruned.result
        finetune = cfg.finetune
        record = {"prune": prune_record(pruned, importance_samples=samples, finetune=finetune)}
        metrics: dict[str, Any] = {
            "params_before": result.params_before,
            "params_after": result.params_after,
            "macs_before": result.macs_before,
            "macs_after": result.macs_after,
            "bytes_before": model_bytes(source),
            "bytes_after": model_bytes(ctx.stage_dir),
            "importance": cfg.importance,
            "global_pruning": cfg.global_pruning,
            "iterative_steps": result.steps,
            "finetune": finetune,
            RECORD_KEY: save_record(ctx, record),
        }
        if planned is not None:
            spend, metrics["finetune_dp"] = self._finetune_spend(ctx, planned, sum(taken))
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
        history, accountant, _, _ = ctx.ledger.lineage_history()
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
        spend = Spend(kind="dp", epsilon=own, delta=delta, lineage="continue", details=details)
        return spend, record
