"""What every membership-inference defense is: a training procedure for the members that releases
a module, and a statement of what that module shows an attacker.

None of these defenses is differentially private: a defended model's ε is infinite (null in the
run dir), whatever its measured attack power. A defense reads the members and, where its paper needs
other data (a validation set, a reference set, a transfer set, an index), the public split only.

A defense is a frozen dataclass: its fields are its settings (the original study's values are
their defaults, and `[defense.NAME]` in a run's config sets them), validated in __post_init__ with
a one-line ValueError.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar

import numpy as np
from torch import nn

from models.training import ProgressFn

# What an attacker querying the released module sees:
# scores: full class scores (logits); masked-scores: scores of which some are replaced (e.g. by a
# one-hot vector); labels: the predicted class only.
RELEASES = ("scores", "masked-scores", "labels")

Arch = dict[str, Any]  # {"name", "kwargs"} of the model registry (models.zoo)
Data = tuple[np.ndarray, np.ndarray]  # (x float32 (N, C, H, W), y int64 (N,))


@dataclass(frozen=True)
class TrainingPlan:
    """The undefended training a defense starts from ([train]: Adam)."""

    epochs: int
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.0


@dataclass(frozen=True)
class Defense(ABC):
    name: ClassVar[str]
    release: ClassVar[str]  # one of RELEASES
    paper: ClassVar[str]  # the idea implemented, with its reference

    def released_arch(self, arch: Arch) -> Arch:
        """The architecture record of the released module, for a base model `arch`."""
        return arch

    @abstractmethod
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
        """The released module (built as released_arch(arch) describes, in eval mode), trained on
        the members with the defense; every random choice from `seed`."""

    def settings(self) -> dict[str, Any]:
        return asdict(self)


DEFENSES: dict[str, type[Defense]] = {}


def register_defense(cls: type[Defense], *, force: bool = False) -> type[Defense]:
    if cls.release not in RELEASES:
        raise ValueError(f"defense '{cls.name}': release must be one of {RELEASES}")
    if cls.name in DEFENSES and not force:
        raise ValueError(f"defense '{cls.name}' is already registered")
    DEFENSES[cls.name] = cls
    return cls


def build_defense(name: str, **settings: Any) -> Defense:
    """The named defense with these settings (the others at their defaults)."""
    if name not in DEFENSES:
        raise ValueError(f"unknown defense '{name}' (known: {', '.join(sorted(DEFENSES))})")
    cls = DEFENSES[name]
    try:
        return cls(**settings)
    except TypeError as exc:  # an unknown setting
        raise ValueError(f"defense '{name}': {exc}") from exc


def knob(default: Any, doc: str) -> Any:
    """A defense setting: its default (the original study's value) and one line for the README's
    config table ([defense.NAME])."""
    return field(default=default, metadata={"doc": doc})
