"""`distill`: a smaller student trained on public data only.

mode "soft": the latest model (a DP teacher) labels the public split with soft labels at
temperature T; the student learns them. Post-processing: the student's ε is the teacher's.
mode "pate": teachers trained on disjoint shards of the members (a keyed hash of each record
picks its teacher, privacy.pate) vote on public queries through GNMax; the student learns the
answers. A fresh model, so a new lineage whose ε is PATE's own (data-independent RDP bound, for
add/remove neighbours like LADP's); the members' total composes it with every earlier spend. The
teachers are not private: their statistics go to metrics under "audit_only" and nothing of them
reaches the student's files.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from torch import nn

from compress.distill import distill_soft as run_soft_distillation
from compress.distill import soft_labels, student_model
from compress.macs import torch_macs
from models.io import load_model, model_bytes, save_model
from models.training import accuracy, fit, predict_logits
from models.zoo import count_params, seeded_model
from pipelines.artifacts import MODEL
from pipelines.context import RunContext
from pipelines.errors import PrivcompError
from pipelines.settings.compression import DistillSettings
from pipelines.stage import POST_PROCESSING, Spend, Stage, StageResult, register_stage
from privacy.pate import PATEConfig, PATEResult, pate_label, pate_spend


def _pate_config(section: DistillSettings) -> PATEConfig:
    return PATEConfig(
        teachers=section.teachers,
        sigma=section.gnmax_sigma,
        queries=section.queries,
        delta=section.delta,
        teacher_epochs=section.teacher_epochs,
        teacher_batch_size=section.batch_size,
        teacher_lr=section.teacher_lr,
    )


@register_stage
class Distill(Stage[DistillSettings]):
    name = "distill"
    requires = (MODEL,)
    provides = (MODEL,)
    privacy_cost = (
        "soft labels from the DP model on public data: free; "
        "pate: its own data-independent RDP bound, composed in the ledger"
    )
    summary = "knowledge distillation into a smaller student on public data (soft or PATE)"
    Config = DistillSettings

    def check(self, ctx: RunContext) -> None:
        cfg = self.config
        if len(ctx.splits["public"]) == 0:
            raise PrivcompError("distill trains the student on the public split: it is empty")
        if cfg.mode == "pate":
            config = _pate_config(cfg)
            try:
                config.check(members=len(ctx.splits["members"]), public=len(ctx.splits["public"]))
            except ValueError as exc:
                raise PrivcompError(f"distill (pate): {exc}") from exc

    def planned_spend(self, ctx: RunContext) -> Spend:
        """PATE's bound is data-independent, so the plan is the spend: a new lineage (a fresh
        student) whose ε is PATE's own; mode soft is post-processing of the teacher."""
        if self.config.mode != "pate":
            return POST_PROCESSING
        spend = pate_spend(_pate_config(self.config))
        details = {**spend.to_dict(), "noise": ctx.noise_mode}
        return Spend(kind="dp", epsilon=spend.epsilon, delta=spend.delta, details=details)

    def _student(self, ctx: RunContext) -> tuple[nn.Module, dict[str, Any]]:
        cfg = self.config
        try:
            return student_model(
                cfg.student,
                in_shape=ctx.dataset.in_shape,
                num_classes=ctx.dataset.num_classes,
                width=cfg.student_width,
                hidden=cfg.student_hidden,
                seed=ctx.derived_seed(0),
            )
        except (TypeError, ValueError) as exc:
            raise PrivcompError(f"distill: cannot build the student: {exc}") from exc

    def run(self, ctx: RunContext) -> StageResult:
        source = ctx.artifact(MODEL)
        teacher, _ = load_model(source)
        student, arch = self._student(ctx)
        if self.config.mode == "pate":
            spend, metrics = self._pate(ctx, student)
        else:
            spend, metrics = self._soft(ctx, teacher, student)
        save_model(student, ctx.stage_dir, arch=arch)
        test_x, test_y = ctx.split("test")
        metrics.update(
            {
                "mode": self.config.mode,
                "teacher_params": count_params(teacher),
                "student_params": count_params(student),
                "teacher_macs": torch_macs(teacher, ctx.dataset.in_shape),
                "student_macs": torch_macs(student, ctx.dataset.in_shape),
                "teacher_bytes": model_bytes(source),
                "student_bytes": model_bytes(ctx.stage_dir),
                "student_test_accuracy": accuracy(predict_logits(student, test_x), test_y),
            }
        )
        return StageResult({MODEL: ctx.stage_dir}, spend, metrics)

    def _soft(
        self, ctx: RunContext, teacher: nn.Module, student: nn.Module
    ) -> tuple[Spend, dict[str, Any]]:
        cfg = self.config
        x, y = ctx.split("public")
        temperature = cfg.temperature
        probs = soft_labels(teacher, x, temperature=temperature)
        with ctx.reporter.task("distill (soft labels)") as progress:
            result = run_soft_distillation(
                student,
                x,
                probs,
                temperature=temperature,
                epochs=cfg.epochs,
                batch_size=cfg.batch_size,
                lr=cfg.lr,
                seed=ctx.derived_seed(1),
                progress=progress,
            )
        metrics = {
            "temperature": temperature,
            "steps": result.steps,
            "final_loss": result.final_loss,
            "public_agreement_with_teacher": float(
                (predict_logits(student, x).argmax(1) == probs.argmax(1)).mean()
            ),
            "teacher_public_accuracy": float((probs.argmax(1) == y).mean()),
        }
        return POST_PROCESSING, metrics

    def _pate(self, ctx: RunContext, student: nn.Module) -> tuple[Spend, dict[str, Any]]:
        cfg = self.config
        config = _pate_config(cfg)
        public_x, public_y = ctx.split("public")
        order = np.random.default_rng(ctx.derived_seed(2)).permutation(len(public_x))
        chosen = order[: config.queries]
        arch = ctx.model_arch()
        kwargs = {**arch["kwargs"], "in_shape": tuple(arch["kwargs"]["in_shape"])}

        def make_teacher(i: int) -> nn.Module:
            return seeded_model(arch["name"], seed=ctx.derived_seed(100 + i), **kwargs)

        with ctx.reporter.task("distill (PATE teachers)") as progress:
            try:
                result = pate_label(
                    make_teacher,
                    ctx.split("members"),
                    (public_x[chosen], public_y[chosen]),
                    num_classes=ctx.dataset.num_classes,
                    config=config,
                    seed=ctx.derived_seed(3),
                    # Public, from the run seed: any data-independent assignment rule is DP.
                    shard_key=ctx.derived_seed(5),
                    noise_seed=ctx.noise_seed(0),
                    progress=progress,
                )
            except ValueError as exc:
                raise PrivcompError(f"distill (pate): {exc}") from exc
        with ctx.reporter.task("distill (PATE student)") as progress:
            fit(
                student,
                public_x[chosen],
                result.labels,
                epochs=cfg.epochs,
                batch_size=cfg.batch_size,
                lr=cfg.lr,
                seed=ctx.derived_seed(4),
                progress=progress,
            )
        details = {**result.spend.to_dict(), "noise": result.noise}
        spend = Spend(
            kind="dp", epsilon=result.spend.epsilon, delta=result.spend.delta, details=details
        )
        return spend, _pate_metrics(result, config, public_y[chosen])


def _pate_metrics(result: PATEResult, config: PATEConfig, labels: np.ndarray) -> dict[str, Any]:
    return {
        "pate_epsilon": result.spend.epsilon,
        "pate_delta": result.spend.delta,
        "teachers": config.teachers,
        "queries": config.queries,
        "gnmax_sigma": config.sigma,
        "noise": result.noise,
        # Read from the non-private teachers: for the auditor's eyes, outside ε. The student
        # learns only result.labels, the GNMax answers.
        "audit_only": {
            "note": (
                "statistics of non-private teachers trained on the members; "
                "not covered by ε, never shipped"
            ),
            "teacher_accuracy_mean": float(np.mean(result.teacher_accuracy)),
            "vote_agreement": result.vote_agreement,
            "label_accuracy": float((result.labels == labels).mean()),
            "empty_shards": sum(size == 0 for size in result.shard_sizes),
        },
    }
