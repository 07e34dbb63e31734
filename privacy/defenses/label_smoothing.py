"""Label smoothing: train on targets that give 1 - ε + ε/C to the true class and ε/C to every other
(Szegedy et al. 2016), so the model is never pushed towards full confidence on a member; evaluated
against membership inference among the baselines of Chen et al. 2022 (RelaxLoss).

Released: the trained model's full class scores. Not DP: ε (privacy) is infinite. Reads the
members only.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import ClassVar

import torch.nn.functional as F

from models.training import LossFn
from privacy.defenses.base import knob, register_defense
from privacy.defenses.fitting import PlainDefense


@dataclass(frozen=True)
class LabelSmoothingDefense(PlainDefense):
    smoothing: float = knob(0.1, "label smoothing of the cross-entropy targets")

    name: ClassVar[str] = "label-smoothing"
    release: ClassVar[str] = "scores"
    paper: ClassVar[str] = (
        "Label smoothing (Szegedy et al. 2016, Rethinking the Inception Architecture) as a defense:"
        " Chen et al. 2022, RelaxLoss: Defending Membership Inference Attacks without Losing "
        "Utility (ICLR)"
    )

    def __post_init__(self) -> None:
        if not 0 <= self.smoothing < 1:
            raise ValueError(f"label smoothing must be in [0, 1), got {self.smoothing}")

    def loss_fn(self) -> LossFn:
        """Cross-entropy against the smoothed targets."""
        return partial(F.cross_entropy, label_smoothing=self.smoothing)


register_defense(LabelSmoothingDefense)
