"""What the defenses share: building the architecture they are given, training it with the plan's
Adam (PlainDefense: a defense that is only that, with another plan or loss), sub-seeds for their
several random choices, and one progress bar over several trainings."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch.nn.functional as F
from torch import nn

from models.training import LossFn, ProgressFn, fit
from models.zoo import seeded_model
from privacy.defenses.base import Arch, Data, Defense, TrainingPlan
from privacy.randomness import child_seed


def build(arch: Arch, *, seed: int) -> nn.Module:
    """A fresh model of `arch` (an arch record: in_shape may be a JSON list)."""
    kwargs = {**arch["kwargs"], "in_shape": tuple(arch["kwargs"]["in_shape"])}
    return seeded_model(arch["name"], seed=seed, **kwargs)


def train(
    model: nn.Module,
    x: np.ndarray,
    y: np.ndarray,
    *,
    plan: TrainingPlan,
    seed: int,
    progress: ProgressFn | None = None,
    loss_fn: LossFn = F.cross_entropy,
) -> nn.Module:
    """`model` trained in place as the plan says; eval mode on return."""
    return fit(
        model,
        x,
        y,
        epochs=plan.epochs,
        batch_size=plan.batch_size,
        lr=plan.lr,
        weight_decay=plan.weight_decay,
        seed=seed,
        progress=progress,
        loss_fn=loss_fn,
    )


def sub_seed(seed: int, part: int) -> int:
    """An independent seed for one of a defense's random choices (an init, a split)."""
    derived = child_seed(seed, part)
    assert derived is not None  # only a None seed derives None
    return derived


def steps(plan: TrainingPlan, n: int) -> int:
    """The optimizer steps `fit` takes on n examples (it counts progress in them)."""
    return plan.epochs * max(1, -(-n // plan.batch_size))


def stage_progress(
    progress: ProgressFn | None, stage_steps: Sequence[int]
) -> list[ProgressFn | None]:
    """One callback per training stage, reporting to `progress` as one bar over all of them."""
    if progress is None:
        return [None] * len(stage_steps)
    total = sum(stage_steps)
    offsets = np.cumsum([0, *stage_steps[:-1]]).tolist()
    report = progress

    def at(offset: int) -> ProgressFn:
        return lambda done, _: report(offset + done, total)

    return [at(int(offset)) for offset in offsets]


@dataclass(frozen=True)
class PlainDefense(Defense):
    """A defense that trains one model of its released architecture with the plan's Adam, only
    changing the plan (`adjusted`) or the loss (`loss_fn`)."""

    def adjusted(self, plan: TrainingPlan) -> TrainingPlan:
        return plan

    def loss_fn(self) -> LossFn:
        return F.cross_entropy

    def train(
        self,
        arch: Arch,
        members: Data,
        *,
        public: Data,
        plan: TrainingPlan,
        seed: int,
        progress: ProgressFn | None = None,
    ) -> nn.Module:
        model = build(self.released_arch(arch), seed=seed)
        return train(
            model,
            *members,
            plan=self.adjusted(plan),
            seed=seed,
            progress=progress,
            loss_fn=self.loss_fn(),
        )
