"""The attack registry and the front door used by the `evaluate` stage."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from attacks import signals
from attacks.base import Attack, AttackContext, AttackScores, Query
from attacks.metrics import AttackMetrics, attack_metrics
from attacks.shadow import ShadowAttack, ShadowSet
from attacks.target import Target
from attacks.threshold import ThresholdAttack
from models.training import ProgressFn
from pipelines.errors import PrivcompError

AttackFactory = Callable[[], Attack]
ATTACKS: dict[str, AttackFactory] = {}
DEFAULT_ATTACKS = ("loss", "confidence", "shadow")

Pair = tuple[np.ndarray, np.ndarray]  # (x, y)


def register_attack(name: str, factory: AttackFactory) -> None:
    ATTACKS[name] = factory


register_attack("loss", lambda: ThresholdAttack(signals.loss_score))
register_attack("confidence", lambda: ThresholdAttack(signals.confidence_score))
register_attack("shadow", ShadowAttack)


def score_attacks(
    target: Target,
    *,
    members: Pair,
    nonmembers: Pair,
    shadows: ShadowSet,
    x_pop: np.ndarray,
    y_pop: np.ndarray,
    names: Sequence[str] = DEFAULT_ATTACKS,
    seed: int = 0,
    progress: ProgressFn | None = None,
) -> dict[str, AttackScores]:
    """Each named attack's scores on the evaluation pair (one target query per example)."""
    _check_inputs(names, shadows=shadows, x_pop=x_pop, y_pop=y_pop)
    total = shadows.k + 2 + len(names)
    step = _Steps(progress, total)
    # Shadow outputs on the population are the expensive shared part: computed once for all.
    pop_logits = shadows.logits(x_pop, progress=lambda done, _: step.at(done))
    ctx = AttackContext(shadows=shadows, x_pop=x_pop, y_pop=y_pop, pop_logits=pop_logits, seed=seed)
    queries = []
    for x, y in (members, nonmembers):
        queries.append(Query(x=x, y=np.asarray(y), logits=target.predict_logits(x)))
        step.next()
    out = {}
    for name in names:
        out[name] = ATTACKS[name]().run(ctx, members=queries[0], nonmembers=queries[1])
        step.next()
    return out


def run_attacks(
    target: Target,
    *,
    members: Pair,
    nonmembers: Pair,
    shadows: ShadowSet,
    x_pop: np.ndarray,
    y_pop: np.ndarray,
    names: Sequence[str] = DEFAULT_ATTACKS,
    delta: float = 1e-5,
    seed: int = 0,
    n_bootstrap: int = 200,
    progress: ProgressFn | None = None,
) -> dict[str, AttackMetrics]:
    """Metrics of each named attack against target; members/nonmembers should be balanced."""
    scores = score_attacks(
        target,
        members=members,
        nonmembers=nonmembers,
        shadows=shadows,
        x_pop=x_pop,
        y_pop=y_pop,
        names=names,
        seed=seed,
        progress=progress,
    )
    return {
        name: attack_metrics(
            s.members,
            s.nonmembers,
            threshold=s.threshold,
            delta=delta,
            n_bootstrap=n_bootstrap,
            seed=seed,
            extra=s.extra,
        )
        for name, s in scores.items()
    }


def _check_inputs(
    names: Sequence[str], *, shadows: ShadowSet, x_pop: np.ndarray, y_pop: np.ndarray
) -> None:
    unknown = [n for n in names if n not in ATTACKS]
    if unknown:
        known = ", ".join(sorted(ATTACKS))
        raise PrivcompError(f"unknown attack(s) {', '.join(unknown)} (known: {known})")
    if not len(x_pop) == len(y_pop) == shadows.n:
        # A stale shadow cache would silently pair shadows with the wrong examples.
        raise PrivcompError(
            f"shadow models were trained on a population of {shadows.n} examples, "
            f"but {len(x_pop)} were given"
        )


class _Steps:
    """Maps the suite's sub-steps onto one progress(done, total) callback."""

    def __init__(self, progress: ProgressFn | None, total: int) -> None:
        self.progress, self.total, self.done = progress, total, 0

    def at(self, done: int) -> None:
        self.done = done
        if self.progress:
            self.progress(done, self.total)

    def next(self) -> None:
        self.at(self.done + 1)
