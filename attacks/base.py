"""The contract between the suite and each attack: what an attack is given and what it returns.

Everything is indexed by the candidate pool: the examples the references were trained on halves
of (the evaluation pair plus the attacker's population). An attack sees the target's outputs on
the whole pool, the references' outputs and membership, which positions it must guess (`query`,
unlabelled) and which are known non-members of the target (`population`). It never sees which
queried examples are members: the suite splits the scores afterwards.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Protocol

import numpy as np


@dataclass(frozen=True, eq=False)
class AttackContext:
    y: np.ndarray  # (n,) labels of the pool
    ref_logits: np.ndarray  # (k, A, n, C) references' logits on A query variants (0 = plain)
    membership: np.ndarray  # (k, n) bool: reference i trained on pool example j
    target_labels: np.ndarray  # (A, n) the target's predicted labels
    target_logits: np.ndarray | None  # (A, n, C); None for a target that returns labels only
    query: np.ndarray  # pool positions whose membership is guessed
    population: np.ndarray  # pool positions known not to be in the target's training set
    seed: int = 0

    @property
    def k(self) -> int:
        return int(self.membership.shape[0])

    @property
    def logits(self) -> np.ndarray:
        """(n, C) the target's logits on the plain inputs."""
        if self.target_logits is None:
            raise LabelOnlyError("this attack needs logits; the target returns labels only")
        return self.target_logits[0]

    @property
    def ref_plain(self) -> np.ndarray:
        """(k, n, C) the references' logits on the plain inputs."""
        return self.ref_logits[:, 0]

    def simulate(self, reference: int = 0) -> tuple[AttackContext, np.ndarray]:
        """The same game with one reference playing the target (attacker-side calibration).

        The other references attack reference `reference` on the population; its known
        membership there (returned) tunes hyper-parameters and decision thresholds, so nothing
        is ever fitted on the evaluation pair.
        """
        if self.k < 2:
            raise ValueError("simulating the attack needs at least two references")
        keep = np.arange(self.k) != reference
        inside = self.membership[reference]
        logits = self.ref_logits[reference]
        sub = replace(
            self,
            ref_logits=self.ref_logits[keep],
            membership=self.membership[keep],
            target_logits=logits,
            target_labels=logits.argmax(axis=-1),
            query=self.population,
            population=self.population[~inside[self.population]],
        )
        return sub, inside[self.population]


class LabelOnlyError(ValueError):
    """An attack that needs scores was given a label-only target."""


@dataclass(frozen=True, eq=False)
class AttackOutput:
    """One score per queried example (ctx.query order); higher = member."""

    scores: np.ndarray
    threshold: float  # chosen on attacker data, never on the evaluation pair
    extra: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True, eq=False)
class AttackScores:
    """An attack's output split by the truth (done by the suite, not by the attack)."""

    members: np.ndarray
    nonmembers: np.ndarray
    threshold: float
    extra: dict[str, float] = field(default_factory=dict)
    # The canaries' scores (members, non-members) when the pool has canaries; members and
    # nonmembers above are then the other queried examples'.
    canaries: tuple[np.ndarray, np.ndarray] | None = None


class Attack(Protocol):
    """An attack; one that works from predicted labels alone sets `needs_logits = False`."""

    def run(self, ctx: AttackContext) -> AttackOutput: ...
