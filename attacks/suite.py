"""The attack registry and the front door used by the `evaluate` stage.

The target is queried once on the whole candidate pool (and its augmented variants); every
attack then works from those outputs and the references'. Scores come back per queried example
and are split into members and non-members here, by the suite: attacks never see the truth.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from functools import partial

import numpy as np

from attacks.base import Attack, AttackContext, AttackScores, LabelOnlyError
from attacks.errors import AttackError
from attacks.label_only import GapAttack
from attacks.lira import LiRA
from attacks.metrics import AttackMetrics, attack_metrics
from attacks.references import ReferenceSet, variant_logits
from attacks.rmia import RMIA
from attacks.shadow import ShadowAttack
from attacks.signals import query_variants
from attacks.target import LabelTarget, Target
from attacks.threshold import SIGNALS, ThresholdAttack
from models.training import ProgressFn

AttackFactory = Callable[[], Attack]
ATTACKS: dict[str, AttackFactory] = {}
DEFAULT_ATTACKS = ("loss", "confidence", "shadow", "lira", "lira-offline", "rmia", "gap")


def register_attack(name: str, factory: AttackFactory) -> None:
    ATTACKS[name] = factory


def _threshold(name: str) -> AttackFactory:
    return lambda: ThresholdAttack(SIGNALS[name])


for _name in SIGNALS:
    register_attack(_name, _threshold(_name))
register_attack("shadow", ShadowAttack)
# "lira" / "lira-offline": per-example variance from 64 references on, a fixed one below.
for _online, _prefix in ((True, "lira"), (False, "lira-offline")):
    for _variance, _suffix in (("auto", ""), ("per-example", "-per-example"), ("fixed", "-fixed")):
        register_attack(_prefix + _suffix, partial(LiRA, online=_online, variance=_variance))
register_attack("rmia", RMIA)
register_attack("gap", GapAttack)


@dataclass(frozen=True, eq=False)
class Pool:
    """The candidate pool: references trained on its halves; positions index x and y.

    members / nonmembers: the evaluation pair (the truth, used only to split scores);
    population: attacker data, known not to be in the target's training set;
    canaries: optional positions among members and nonmembers (data.canaries: mislabelled
    records) whose metrics are reported apart from the population average of the others.
    """

    x: np.ndarray
    y: np.ndarray
    members: np.ndarray
    nonmembers: np.ndarray
    population: np.ndarray
    canaries: np.ndarray | None = None

    def __post_init__(self) -> None:
        parts = [np.asarray(p) for p in (self.members, self.nonmembers, self.population)]
        joined = np.concatenate(parts)
        if len(self.x) != len(self.y):
            raise AttackError("pool inputs and labels differ in length")
        if joined.size and (joined.min() < 0 or joined.max() >= len(self.y)):
            raise AttackError("pool positions out of range")
        if np.unique(joined).size != joined.size:
            raise AttackError("members, non-members and population must be disjoint")
        if self.canaries is None:
            members, nonmembers = self.members, self.nonmembers
        else:
            canaries = np.asarray(self.canaries)
            if np.unique(canaries).size != canaries.size:
                raise AttackError("canary positions must be distinct")
            if not np.isin(canaries, joined[: len(self.members) + len(self.nonmembers)]).all():
                raise AttackError("canaries must be positions of members or non-members")
            members = np.setdiff1d(self.members, canaries)
            nonmembers = np.setdiff1d(self.nonmembers, canaries)
            inside = np.isin(self.members, canaries).sum()
            if min(inside, len(canaries) - inside) == 0:
                raise AttackError("the canaries need at least one member and one non-member")
        if min(len(members), len(nonmembers)) == 0:
            raise AttackError("the evaluation pair needs at least one member and one non-member")

    @property
    def query(self) -> np.ndarray:
        return np.sort(np.concatenate([self.members, self.nonmembers]))

    @property
    def is_canary(self) -> np.ndarray:
        """(len(query),) bool: which queried positions are canaries."""
        if self.canaries is None:
            return np.zeros(len(self.query), dtype=bool)
        return np.isin(self.query, self.canaries)


@dataclass(frozen=True, eq=False)
class TargetOutputs:
    labels: np.ndarray  # (A, n)
    logits: np.ndarray | None  # (A, n, C); None for a label-only target


def query_target(target: Target | LabelTarget, variants: np.ndarray) -> TargetOutputs:
    """The target's answers on every variant (A, n, ...) of the pool."""
    if isinstance(target, Target):
        logits = variant_logits(target, variants)
        return TargetOutputs(labels=logits.argmax(axis=-1), logits=logits)
    if isinstance(target, LabelTarget):
        labels = np.stack([np.asarray(target.predict_labels(v)) for v in variants])
        return TargetOutputs(labels=labels, logits=None)
    raise AttackError(f"cannot query a {type(target).__name__}: no predict_logits/labels")


def score_attacks(
    target: Target | LabelTarget,
    *,
    pool: Pool,
    references: ReferenceSet,
    names: Sequence[str] = DEFAULT_ATTACKS,
    seed: int = 0,
    progress: ProgressFn | None = None,
) -> dict[str, AttackScores]:
    """Each named attack's scores on the evaluation pair (members, non-members); with canaries
    in the pool those are the other queried examples', and the canaries' are apart."""
    check_attack_names(names)
    if references.n != len(pool.y):
        # A stale reference cache would silently pair references with the wrong examples.
        raise AttackError(
            f"reference models were trained on a pool of {references.n} examples, "
            f"but the pool has {len(pool.y)}"
        )
    total, done = len(names) + 1, 0
    outputs = query_target(target, query_variants(pool.x, references.augment))
    done += 1
    if progress:
        progress(done, total)
    query = pool.query
    ctx = AttackContext(
        y=np.asarray(pool.y),
        ref_logits=references.logits,
        membership=references.membership,
        target_labels=outputs.labels,
        target_logits=outputs.logits,
        query=query,
        population=np.asarray(pool.population),
        seed=seed,
    )
    is_member = np.isin(query, pool.members)
    is_canary = pool.is_canary
    out = {}
    for name in names:
        attack = ATTACKS[name]()
        if outputs.logits is None and getattr(attack, "needs_logits", True):
            raise AttackError(f"attack '{name}' needs scores; the target returns labels only")
        try:
            result = attack.run(ctx)
        except LabelOnlyError as exc:
            raise AttackError(f"attack '{name}': {exc}") from exc
        scores = np.asarray(result.scores, dtype=np.float64)
        canaries = None
        if is_canary.any():
            canaries = (scores[is_member & is_canary], scores[~is_member & is_canary])
        out[name] = AttackScores(
            members=scores[is_member & ~is_canary],
            nonmembers=scores[~is_member & ~is_canary],
            threshold=result.threshold,
            extra=dict(result.extra),
            canaries=canaries,
        )
        done += 1
        if progress:
            progress(done, total)
    return out


def run_attacks(
    target: Target | LabelTarget,
    *,
    pool: Pool,
    references: ReferenceSet,
    names: Sequence[str] = DEFAULT_ATTACKS,
    delta: float = 1e-5,
    seed: int = 0,
    n_bootstrap: int = 200,
    progress: ProgressFn | None = None,
) -> dict[str, AttackMetrics]:
    """Metrics of each named attack against target; the evaluation pair should be balanced.

    With canaries in the pool each attack's metrics are those of the other queried examples
    (the population average) and `canaries` holds the same metrics on the canaries alone, at
    the attacker's same threshold.
    """
    scores = score_attacks(
        target, pool=pool, references=references, names=names, seed=seed, progress=progress
    )
    out = {}
    for name, s in scores.items():
        metrics = attack_metrics(
            s.members,
            s.nonmembers,
            threshold=s.threshold,
            delta=delta,
            n_bootstrap=n_bootstrap,
            seed=seed,
            extra=s.extra,
        )
        if s.canaries is not None:
            on_canaries = attack_metrics(
                *s.canaries, threshold=s.threshold, delta=delta, n_bootstrap=n_bootstrap, seed=seed
            )
            metrics = replace(metrics, canaries=on_canaries)
        out[name] = metrics
    return out


def label_only(name: str) -> bool:
    """Whether the named attack works from predicted labels alone."""
    return not getattr(ATTACKS[name](), "needs_logits", True)


def attacks_for_release(names: Sequence[str], release: str) -> list[str]:
    """The attacks that fit what a model releases (Aerni et al. 2024: attack what is released).

    scores: the attacks asked for; masked-scores (some answers replaced, e.g. by one-hot vectors):
    those attacks on the masked answers, plus the label-only attack, which a masked answer still
    feeds; labels: the label-only attacks asked for, the gap attack at least.
    """
    check_attack_names(names)
    if release == "scores":
        return list(names)
    if release == "masked-scores":
        return list(dict.fromkeys([*names, "gap"]))
    if release == "labels":
        return [n for n in names if label_only(n)] or ["gap"]
    raise AttackError(f"unknown release '{release}' (scores, masked-scores, labels)")


def check_attack_names(names: Sequence[str]) -> None:
    unknown = [n for n in names if n not in ATTACKS]
    if unknown:
        known = ", ".join(sorted(ATTACKS))
        raise AttackError(f"unknown attack(s) {', '.join(unknown)} (known: {known})")
