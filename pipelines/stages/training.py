"""Training stages: `train` (not private) and `train-ladp` (layer-wise adaptive DP-SGD)."""

from __future__ import annotations

from dataclasses import fields
from typing import Any

import numpy as np
from torch import nn

from models.io import save_model
from models.training import ProgressFn, accuracy, fit, predict_logits
from models.zoo import seeded_model
from pipelines.artifacts import MODEL
from pipelines.context import RunContext
from pipelines.errors import PrivcompError
from pipelines.stage import Spend, Stage, StageResult
from pipelines.stages import register_stage
from privacy.dpsgd import train_dpsgd
from privacy.ladp import LADPConfig, LADPResult, train_ladp


def _fresh_model(ctx: RunContext) -> tuple[nn.Module, dict[str, Any]]:
    arch = ctx.model_arch()
    kwargs = {**arch["kwargs"], "in_shape": tuple(arch["kwargs"]["in_shape"])}
    try:
        return seeded_model(arch["name"], seed=ctx.seed, **kwargs), arch
    except (KeyError, TypeError) as exc:
        raise PrivcompError(f"cannot build model '{arch['name']}': {exc}") from exc


@register_stage
class Train(Stage):
    name = "train"
    requires = ("splits",)
    provides = (MODEL,)
    uses_private_data = True
    privacy_cost = "epsilon = inf: trains on the members without DP"
    summary = "non-private baseline training on the members"

    def run(self, ctx: RunContext) -> StageResult:
        x, y = ctx.split("members")
        model, arch = _fresh_model(ctx)
        with ctx.reporter.task("train (non-private)") as progress:
            fit(
                model,
                x,
                y,
                epochs=int(self.config["epochs"]),
                batch_size=int(self.config["batch_size"]),
                lr=float(self.config["lr"]),
                weight_decay=float(self.config["weight_decay"]),
                seed=ctx.seed,
                progress=progress,
            )
        save_model(model, ctx.stage_dir, arch=arch)
        train_acc = accuracy(predict_logits(model, x), y)
        spend = Spend(kind="none", details={"mechanism": "adam, no DP"})
        return StageResult({MODEL: ctx.stage_dir}, spend, {"train_accuracy": train_acc})


def ladp_config(section: dict[str, Any]) -> LADPConfig:
    known = {f.name for f in fields(LADPConfig)}
    return LADPConfig(**{k: v for k, v in section.items() if k in known})


@register_stage
class TrainLADP(Stage):
    name = "train-ladp"
    requires = ("splits",)
    provides = (MODEL,)
    uses_private_data = True
    privacy_cost = "(epsilon, delta)-DP, accounted (PRV or RDP); stops at the budget"
    summary = "layer-wise adaptive DP-SGD on the members"

    def check(self, ctx: RunContext) -> None:
        try:
            ladp_config(self.config).check(len(ctx.splits["members"]))
        except ValueError as exc:
            raise PrivcompError(f"{self.name}: {exc}") from exc

    def train(
        self, ctx: RunContext, model: nn.Module, x: np.ndarray, y: np.ndarray, progress: ProgressFn
    ) -> LADPResult:
        public_x, public_y = ctx.split("public")
        return train_ladp(
            model,
            x,
            y,
            config=ladp_config(self.config),
            seed=ctx.seed,
            progress=progress,
            public_x=public_x,  # Fisher sensitivities: public data, no budget
            public_y=public_y,
        )

    def run(self, ctx: RunContext) -> StageResult:
        x, y = ctx.split("members")
        model, arch = _fresh_model(ctx)
        with ctx.reporter.task(self.name) as progress:
            try:
                result = self.train(ctx, model, x, y, progress)
            except ValueError as exc:
                raise PrivcompError(f"{self.name}: {exc}") from exc
        save_model(result.model, ctx.stage_dir, arch=arch)
        spend = result.spend
        metrics = {
            "steps_planned": result.steps_planned,
            "steps_taken": result.steps_taken,
            "stopped_at_budget": result.stopped_at_budget,
        }
        details = spend.to_dict()
        return StageResult(
            {MODEL: ctx.stage_dir},
            Spend(kind="dp", epsilon=spend.epsilon, delta=spend.delta, details=details),
            metrics,
        )


@register_stage
class TrainDPSGD(TrainLADP):
    """The baseline LADP is measured against: same sampling, steps and accountant."""

    name = "train-dpsgd"
    privacy_cost = "(epsilon, delta)-DP, Opacus DP-SGD (flat clipping), accounted like train-ladp"
    summary = "plain DP-SGD with Opacus on the members ([train-dpsgd] settings)"

    def train(
        self, ctx: RunContext, model: nn.Module, x: np.ndarray, y: np.ndarray, progress: ProgressFn
    ) -> LADPResult:
        config = ladp_config(self.config)
        return train_dpsgd(model, x, y, config=config, seed=ctx.seed, progress=progress)
