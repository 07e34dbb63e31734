"""Dropout: randomly zero hidden activations while training, so no single unit memorises a member
(Srivastava et al. 2014); evaluated against membership inference by Salem et al. 2019 (ML-Leaks).

The released architecture is the base one with the zoo's `dropout` kwarg set to the rate; eval mode
disables dropout, so the released model, its export and its compressed forms are deterministic.
Released: the trained model's full class scores. Not DP: ε is infinite. Reads the members only.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import ClassVar

from models.zoo import MODELS
from privacy.defenses.base import Arch, knob, register_defense
from privacy.defenses.fitting import PlainDefense


def _with_dropout() -> list[str]:
    """The registered models whose factory takes a dropout rate."""
    return sorted(n for n, f in MODELS.items() if "dropout" in inspect.signature(f).parameters)


@dataclass(frozen=True)
class DropoutDefense(PlainDefense):
    rate: float = knob(0.5, "dropout rate before the classifier layers")

    name: ClassVar[str] = "dropout"
    release: ClassVar[str] = "scores"
    paper: ClassVar[str] = (
        "Dropout (Srivastava et al. 2014) as a defense: Salem et al. 2019, ML-Leaks: Model and "
        "Data Independent Membership Inference Attacks and Defenses (NDSS)"
    )

    def __post_init__(self) -> None:
        if not 0 <= self.rate < 1:
            raise ValueError(f"dropout rate must be in [0, 1), got {self.rate}")

    def released_arch(self, arch: Arch) -> Arch:
        if arch["name"] not in _with_dropout():
            known = ", ".join(_with_dropout())
            raise ValueError(f"model '{arch['name']}' has no dropout setting (those with: {known})")
        return {"name": arch["name"], "kwargs": {**arch["kwargs"], "dropout": self.rate}}


register_defense(DropoutDefense)
