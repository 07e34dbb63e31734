"""The contract between the suite and each attack: what an attack is given and what it returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

import numpy as np

if TYPE_CHECKING:
    from attacks.shadow import ShadowSet


@dataclass(frozen=True, eq=False)
class Query:
    """Examples whose membership is guessed, with the target's logits on them."""

    x: np.ndarray
    y: np.ndarray
    logits: np.ndarray


@dataclass(frozen=True, eq=False)
class AttackContext:
    """Attacker knowledge, shared by every attack of one evaluation.

    pop_logits, the shadows' logits on the population (k, n, C), is computed once by the suite;
    attacks that need shadow outputs on other inputs (e.g. LiRA on the query) call shadows.logits.
    """

    shadows: ShadowSet
    x_pop: np.ndarray
    y_pop: np.ndarray
    pop_logits: np.ndarray
    seed: int


@dataclass(frozen=True, eq=False)
class AttackScores:
    members: np.ndarray  # higher = member
    nonmembers: np.ndarray
    threshold: float  # chosen on attacker data, never on the evaluation pair
    extra: dict[str, float] = field(default_factory=dict)


class Attack(Protocol):
    def run(self, ctx: AttackContext, *, members: Query, nonmembers: Query) -> AttackScores: ...
