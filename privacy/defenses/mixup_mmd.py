"""Mixup + MMD (Li, Li & Ribeiro, "Membership Inference Attacks and Defenses in Classification
Models", CODASPY 2021): close the gap between the model's outputs on members and on other data.

Each member batch is trained with mixup (inputs and labels mixed with a Beta(α, α) weight, Zhang
et al. 2018), and the loss adds λ times the squared maximum mean discrepancy (Gaussian kernel)
between the model's softmax outputs on the member batch and on a validation batch drawn from the
public split, class by class as in the paper (the classes present in both batches, averaged).

Released: the model's full scores. Not differentially private: ε is infinite. Reads, besides the
members, the public split only (the validation set).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from models.training import ProgressFn
from privacy.defenses.base import Arch, Data, TrainingPlan, knob, register_defense
from privacy.defenses.fitting import build
from privacy.defenses.loops import (
    DrawPublic,
    LoopDefense,
    Metrics,
    Trained,
    train_with_public,
)

# Bandwidth σ of the Gaussian kernel exp(-|a - b|² / 2σ²) on softmax vectors. Fixed rather than
# the median heuristic: two confident outputs of one class are nearly equal, so the median of a
# class's distances shrinks to 0 as training goes and would make the penalty's scale drift.
# Softmax vectors are at most √2 apart, so σ = 1 keeps the kernel informative over the simplex.
KERNEL_WIDTH = 1.0


def gaussian_mmd2(a: Tensor, b: Tensor, *, width: float = KERNEL_WIDTH) -> Tensor:
    """The biased (V-statistic) estimate of MMD² between samples a and b: never negative."""

    def kernel(u: Tensor, v: Tensor) -> Tensor:
        return torch.exp(-torch.cdist(u, v).square() / (2 * width**2)).mean()

    return kernel(a, a) + kernel(b, b) - 2 * kernel(a, b)


def class_conditional_mmd2(a: Tensor, ya: Tensor, b: Tensor, yb: Tensor) -> Tensor:
    """MMD² between a and b per class present in both, averaged (0 when none is)."""
    terms = [
        gaussian_mmd2(a[ya == c], b[yb == c]) for c in torch.unique(ya) if bool((yb == c).any())
    ]
    return torch.stack(terms).mean() if terms else a.new_zeros(())


@dataclass(frozen=True)
class MixupMMD(LoopDefense):
    name: ClassVar[str] = "mixup-mmd"
    release: ClassVar[str] = "scores"
    paper: ClassVar[str] = (
        "mixup training plus a class-conditional MMD penalty between outputs on members and on "
        "a validation set; Li, Li & Ribeiro, CODASPY 2021"
    )

    alpha: float = knob(1.0, "mixup's Beta(α, α)")
    weight: float = knob(0.1, "λ of the MMD² penalty (members vs public outputs, per class)")

    def __post_init__(self) -> None:
        if not self.alpha > 0:  # also refuses NaN
            raise ValueError(f"{self.name}: alpha must be > 0, got {self.alpha}")
        if not self.weight >= 0:
            raise ValueError(f"{self.name}: weight must be >= 0, got {self.weight}")

    def fit(
        self,
        arch: Arch,
        members: Data,
        *,
        public: Data,
        plan: TrainingPlan,
        seed: int,
        progress: ProgressFn | None = None,
    ) -> Trained:
        """train's model with the per-epoch history: the MMD² penalty (before λ) and the mixup
        cross-entropy."""
        model = build(arch, seed=seed)
        # The mixing weights and partners: a stream of their own, apart from the batch order.
        rng = np.random.default_rng([seed, 0x313])

        def step(x: Tensor, y: Tensor, draw: DrawPublic) -> tuple[Tensor, Metrics]:
            lam = float(rng.beta(self.alpha, self.alpha))
            partner = torch.from_numpy(rng.permutation(len(x)))
            logits = model(lam * x + (1 - lam) * x[partner])
            mixup = lam * F.cross_entropy(logits, y) + (1 - lam) * F.cross_entropy(
                logits, y[partner]
            )
            vx, vy = draw()
            # On clean members: the attacker queries the members themselves, not their mixtures.
            penalty = class_conditional_mmd2(
                F.softmax(model(x), dim=1), y, F.softmax(model(vx), dim=1), vy
            )
            metrics = {"mmd": penalty.item(), "mixup_loss": mixup.item()}
            return mixup + self.weight * penalty, metrics

        return train_with_public(
            model, members, public, plan=plan, seed=seed, step=step, progress=progress
        )


register_defense(MixupMMD)
