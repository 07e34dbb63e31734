"""Training stages: `train` (not private), `train-ladp` (layer-wise adaptive DP-SGD) and
`train-dpsgd` (the flat-clipping baseline); the DP ones run a private hyper-parameter search when
a searchable setting holds a list of candidates (privacy.search)."""

from __future__ import annotations

import copy
from typing import Any

from torch import nn

from models.io import save_model
from models.training import accuracy, fit, predict_logits
from models.zoo import seeded_model
from pipelines.artifacts import MODEL
from pipelines.context import RunContext
from pipelines.cost import measured
from pipelines.errors import PrivcompError
from pipelines.settings.training import (
    DPTrainingSettings,
    TrainDPSGDSettings,
    TrainLADPSettings,
    TrainSettings,
)
from pipelines.stage import Spend, Stage, StageResult, register_stage
from privacy.config import LADPConfig, plan_noise
from privacy.defenses import Defense
from privacy.engines import build_engine, engine_details
from privacy.ladp import LADPEngine, LADPResult
from privacy.search import SearchPlan, SearchSpace, plan_search, public_accuracy, run_search


def _fresh_model(ctx: RunContext) -> tuple[nn.Module, dict[str, Any]]:
    arch = ctx.model_arch()
    kwargs = {**arch["kwargs"], "in_shape": tuple(arch["kwargs"]["in_shape"])}
    try:
        return seeded_model(arch["name"], seed=ctx.seed, **kwargs), arch
    except (KeyError, TypeError) as exc:
        raise PrivcompError(f"cannot build model '{arch['name']}': {exc}") from exc


NOT_PRIVATE = Spend(kind="none", details={"mechanism": "adam, no DP"})


def defended_spend(defense: Defense) -> Spend:
    """A defense is not DP: the spend says which one ran, and ε stays infinite."""
    details = {"mechanism": f"adam with defense '{defense.name}', no DP", "defense": defense.name}
    return Spend(kind="none", details=details)


@register_stage
class Train(Stage[TrainSettings]):
    name = "train"
    requires = ("splits",)
    provides = (MODEL,)
    privacy_cost = "epsilon = inf: trains on the members without DP (a defense is not DP either)"
    summary = "non-private training on the members, optionally with a defense (--defense NAME)"
    Config = TrainSettings

    def planned_spend(self, ctx: RunContext) -> Spend:
        defense = ctx.config.defense()
        return NOT_PRIVATE if defense is None else defended_spend(defense)

    def run(self, ctx: RunContext) -> StageResult:
        x, y = ctx.split("members")
        defense = ctx.config.defense()
        label = "train (non-private)" if defense is None else f"train with {defense.name} (not DP)"
        with ctx.reporter.task(label) as progress, measured() as cost:
            if defense is None:
                model, arch = _fresh_model(ctx)
                fit(
                    model,
                    x,
                    y,
                    epochs=self.config.epochs,
                    batch_size=self.config.batch_size,
                    lr=self.config.lr,
                    weight_decay=self.config.weight_decay,
                    seed=ctx.seed,
                    progress=progress,
                )
            else:
                base = ctx.model_arch()
                arch = defense.released_arch(base)
                model = defense.train(
                    base,
                    (x, y),
                    public=ctx.split("public"),
                    plan=self.config.plan(),
                    seed=ctx.seed,
                    progress=progress,
                )
        save_model(model, ctx.stage_dir, arch=arch)
        metrics: dict[str, Any] = {
            "train_accuracy": accuracy(predict_logits(model, x), y),
            "cost": cost.to_dict(),
        }
        if defense is not None:
            metrics["defense"] = {
                "name": defense.name,
                "release": defense.release,
                "settings": defense.settings(),
            }
        return StageResult({MODEL: ctx.stage_dir}, self.planned_spend(ctx), metrics)


class _DPTraining(Stage[DPTrainingSettings]):
    """A DP training stage: one engine run on the members, or a private search over candidates."""

    requires = ("splits",)
    provides = (MODEL,)
    engine: str  # privacy.engines: how the members are trained on

    def space(self) -> SearchSpace:
        try:
            return self.config.space()
        except ValueError as exc:
            raise PrivcompError(f"{self.name}: {exc}") from exc

    @property
    def conceals_duration(self) -> bool:
        return self.space().searching  # a search's wall time would reveal its repetitions

    def check(self, ctx: RunContext) -> None:
        space = self.space()
        try:
            space.check(len(ctx.splits["members"]))
            if space.searching:
                self.config.search.search_config().check()
        except ValueError as exc:
            raise PrivcompError(f"{self.name}: {exc}") from exc

    def planned_spend(self, ctx: RunContext) -> Spend:
        """The mechanism the stage will run, fixed before it reads the members: (q, σ, steps)
        of the planned run, or the search's RDP curve; ε is the target, an upper bound on what
        it prints."""
        space, n = self.space(), len(ctx.splits["members"])
        try:
            if space.searching:
                plan = plan_search(space, self.config.search.search_config(), n)
                return self._search_spend(plan, space, ctx.noise_mode, {}, None)
            cfg = space.config()
            q, _, sigma, steps = plan_noise(cfg, n)
        except ValueError as exc:
            raise PrivcompError(f"{self.name}: {exc}") from exc
        details = {
            "noise_multiplier": sigma,
            "sample_rate": q,
            "steps": steps,
            "accountant": cfg.accountant,
            "mechanism": self.engine,
            **engine_details(self.engine, cfg),
            "noise": ctx.noise_mode,
        }
        return Spend(kind="dp", epsilon=cfg.epsilon, delta=cfg.delta, details=details)

    def _engine(
        self,
        ctx: RunContext,
        model: nn.Module,
        config: LADPConfig,
        noise_seed: int | None,
    ) -> LADPEngine:
        x, y = ctx.split("members")
        return build_engine(
            self.engine,
            model,
            x,
            y,
            config=config,
            seed=ctx.seed,
            noise_seed=noise_seed,
            public=ctx.split("public"),  # LADP's layer sensitivities: public data, no budget
        )

    def run(self, ctx: RunContext) -> StageResult:
        model, arch = _fresh_model(ctx)
        space = self.space()
        try:
            if space.searching:
                model, spend, metrics = self._search(ctx, model, space)
            else:
                with ctx.reporter.task(self.name) as progress, measured() as cost:
                    config = space.config()
                    engine = self._engine(ctx, model, config, ctx.noise_seed(0))
                    model, spend, metrics = self._released(engine.run(progress), config)
                metrics["cost"] = cost.to_dict()  # a search's cost would reveal its K
        except ValueError as exc:
            raise PrivcompError(f"{self.name}: {exc}") from exc
        save_model(model, ctx.stage_dir, arch=arch)
        return StageResult({MODEL: ctx.stage_dir}, spend, metrics)

    def _released(
        self, result: LADPResult, config: LADPConfig
    ) -> tuple[nn.Module, Spend, dict[str, Any]]:
        spend = result.spend
        metrics = {
            "steps_planned": result.steps_planned,
            "steps_taken": result.steps_taken,
            "stopped_at_budget": result.stopped_at_budget,
        }
        # References and the audit rebuild the engine from these details.
        details = {**spend.to_dict(), **engine_details(self.engine, config)}
        dp = Spend(kind="dp", epsilon=spend.epsilon, delta=spend.delta, details=details)
        return result.model, dp, metrics

    def _search(
        self, ctx: RunContext, initial: nn.Module, space: SearchSpace
    ) -> tuple[nn.Module, Spend, dict[str, Any]]:
        plan = plan_search(space, self.config.search.search_config(), len(ctx.splits["members"]))

        def train(config: LADPConfig, noise_seed: int | None) -> nn.Module:
            return self._engine(ctx, copy.deepcopy(initial), config, noise_seed).run().model

        # No count and no clock: how far or how long the search went would reveal K.
        with ctx.reporter.untimed(f"{self.name}: private hyper-parameter search (no progress)"):
            result = run_search(
                space,
                plan,
                initial=initial,
                train=train,
                score=public_accuracy(*ctx.split("public")),
                noise_seed=ctx.noise_seed(0),
            )
        spend = self._search_spend(plan, space, result.noise, result.candidate, result.public_score)
        metrics = {
            "search": {
                "candidates": len(space.candidates()),
                "chosen": result.candidate,
                "public_score": result.public_score,
                "steps_per_repetition": plan.steps,
            }
        }
        return result.model, spend, metrics

    def _search_spend(
        self,
        plan: SearchPlan,
        space: SearchSpace,
        noise: str,
        chosen: dict[str, Any],
        score: float | None,
    ) -> Spend:
        details = {
            "mechanism": f"hyper-parameter search over {self.engine} (Papernot & Steinke 2022)",
            "accountant": "rdp",
            # per_example cannot be searched: every candidate shares it.
            **engine_details(self.engine, space.config()),
            "noise": noise,
            "rdp_orders": list(plan.orders),
            "rdp": list(plan.rdp),
            # What one repetition ran (the same for every candidate); informative only.
            "noise_multiplier": plan.noise_multiplier,
            "sample_rate": plan.sample_rate,
            "steps": plan.steps,
            "search": {
                "distribution": plan.search.distribution,
                "mean": plan.search.mean,
                "shape": plan.search.shape,
            },
            "chosen": chosen,
            "public_score": score,
        }
        return Spend(kind="dp", epsilon=plan.epsilon, delta=plan.delta, details=details)


@register_stage
class TrainLADP(_DPTraining):
    name = "train-ladp"
    privacy_cost = (
        "(epsilon, delta)-DP, accounted (PRV or RDP); stops at the budget; candidate lists: a "
        "private hyper-parameter search, accounted as a whole"
    )
    summary = "layer-wise adaptive DP-SGD on the members"
    Config = TrainLADPSettings
    engine = "ladp"


@register_stage
class TrainDPSGD(_DPTraining):
    """The baseline LADP is measured against: same sampling, steps, accountant and noise."""

    name = "train-dpsgd"
    privacy_cost = "(epsilon, delta)-DP, DP-SGD (flat clipping), accounted like train-ladp"
    summary = (
        "plain DP-SGD on the members ([train-dpsgd]; per-example gradients from Opacus, or "
        'per_example = "privcomp")'
    )
    Config = TrainDPSGDSettings
    engine = "dp-sgd"
