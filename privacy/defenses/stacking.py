"""Model stacking (Salem et al. 2019, ML-Leaks): the members are split, at random and disjointly,
into three parts; two base models (the base architecture) are trained on parts 1 and 2, and a
meta-classifier (multinomial logistic regression) on part 3, on the bases' concatenated softmax
outputs with the bases frozen. No model sees all the members, and the meta-classifier sees only
members its inputs' models never trained on, which smooths the confidence an attacker reads.

Released: one module (models.stacking's "stacked" architecture), its full class scores. Not DP:
ε is infinite. Reads the members only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from models.stacking import STACKED, StackedModel
from models.training import ProgressFn, predict_logits
from privacy.defenses.base import Arch, Data, Defense, TrainingPlan, register_defense
from privacy.defenses.fitting import build, stage_progress, steps, sub_seed, train

PARTS = 3
META_ITERATIONS = 100  # L-BFGS iterations, sklearn LogisticRegression's max_iter


def stacking_parts(n: int, seed: int) -> list[np.ndarray]:
    """Member indices of the three parts: disjoint, covering 0..n-1, sizes within one."""
    if n < PARTS:
        raise ValueError(f"model-stacking needs at least {PARTS} members, got {n}")
    order = np.random.default_rng(sub_seed(seed, 0)).permutation(n)
    return [np.sort(part) for part in np.array_split(order, PARTS)]


def fit_meta(layer: nn.Linear, scores: np.ndarray, y: np.ndarray) -> None:
    """Multinomial logistic regression on the bases' scores, fitted in place to convergence with
    full-batch L-BFGS and sklearn's default L2 penalty (C = 1). The model is convex, and the plan's
    few Adam epochs on one third of the members leave it far from its optimum."""
    xt, yt = torch.as_tensor(scores), torch.as_tensor(y)
    opt = torch.optim.LBFGS(
        layer.parameters(), max_iter=META_ITERATIONS, line_search_fn="strong_wolfe"
    )

    def closure() -> torch.Tensor:
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(layer(xt), yt) + 0.5 / len(yt) * layer.weight.square().sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)


@dataclass(frozen=True)
class StackingDefense(Defense):
    name: ClassVar[str] = "model-stacking"
    release: ClassVar[str] = "scores"
    paper: ClassVar[str] = (
        "Model stacking: Salem et al. 2019, ML-Leaks: Model and Data Independent Membership "
        "Inference Attacks and Defenses on Machine Learning Models (NDSS)"
    )

    def released_arch(self, arch: Arch) -> Arch:
        kwargs = dict(arch["kwargs"])
        shared = {key: kwargs.pop(key) for key in ("in_shape", "num_classes")}
        return {"name": STACKED, "kwargs": {"base": arch["name"], "base_kwargs": kwargs, **shared}}

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
        x, y = members
        parts = stacking_parts(len(y), seed)
        model = build(self.released_arch(arch), seed=sub_seed(seed, 1))
        assert isinstance(model, StackedModel)
        # The meta-classifier's fit counts as one step of the progress bar.
        stages = stage_progress(
            progress, [steps(plan, len(parts[0])), steps(plan, len(parts[1])), 1]
        )
        for i, base in enumerate((model.bases.a, model.bases.b)):
            part = parts[i]
            train(base, x[part], y[part], plan=plan, seed=sub_seed(seed, 2 + i), progress=stages[i])
        # The bases are frozen from here: only the meta-classifier trains, on their outputs.
        fit_meta(model.meta_classifier, predict_logits(model.bases, x[parts[2]]), y[parts[2]])
        if stages[2] is not None:
            stages[2](1, 1)
        return model.eval()


register_defense(StackingDefense)
