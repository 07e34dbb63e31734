"""L2 regularisation: penalise the weights' squared norm so the model fits the members less
tightly, shrinking the gap in confidence between members and non-members that membership
inference exploits (Shokri et al. 2017, evaluated as a defense there and in Nasr et al. 2018).

Adam's coupled L2: λ is added to the gradient as λ·w (torch's Adam weight_decay), on top of the
[train] weight_decay. Released: the trained model's full class scores. Not DP: ε is infinite. Reads
the members only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import ClassVar

from privacy.defenses.base import TrainingPlan, knob, register_defense
from privacy.defenses.fitting import PlainDefense


@dataclass(frozen=True)
class L2Defense(PlainDefense):
    weight: float = knob(0.01, "λ: Adam's coupled L2 penalty (added to train.weight_decay)")

    name: ClassVar[str] = "l2"
    release: ClassVar[str] = "scores"
    paper: ClassVar[str] = (
        "L2 regularisation (Adam's coupled weight decay λ): Shokri et al. 2017, "
        "Membership Inference Attacks Against Machine Learning Models (IEEE S&P)"
    )

    def __post_init__(self) -> None:
        if not 0 <= self.weight < math.inf:
            raise ValueError(f"l2 weight must be finite and >= 0, got {self.weight}")

    def adjusted(self, plan: TrainingPlan) -> TrainingPlan:
        return replace(plan, weight_decay=plan.weight_decay + self.weight)


register_defense(L2Defense)
