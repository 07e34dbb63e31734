"""Adaptive composition of the DP mechanisms run on one data set (DESIGN §4, §5.6).

A history is a sequence of mechanisms: Poisson-subsampled Gaussian steps (LADP, DP-SGD, a PATE
GNMax answer as σ/√2 at q = 1), RDP curves (the private hyper-parameter search) and mechanisms
known only by (ε, δ). Gaussian steps compose by one accountant (Opacus PRV or RDP: each is an
adaptive composition theorem), together with any RDP curve in RDP; opaque entries are added
(basic composition). Each rule is an upper bound, so the result is one for any mix. A Parallel
entry (federated clients on disjoint records) splits the history into one branch per part; the
bound is the worst branch's.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from privacy.accounting import ACCOUNTANTS, history_epsilon
from privacy.rdp import gaussian_rdp, rdp_epsilon


@dataclass(frozen=True)
class Guarantee:
    """What a composed history (or one artifact) guarantees: (ε, δ)-DP, bounded by accountant."""

    epsilon: float | None  # None: not private (infinite)
    delta: float | None
    accountant: str | None = None


@dataclass(frozen=True)
class GaussianSteps:
    """`steps` Poisson-subsampled Gaussian mechanisms with noise multiplier σ and rate q."""

    noise_multiplier: float
    sample_rate: float
    steps: int


@dataclass(frozen=True)
class RDPCurve:
    """A mechanism known by its Rényi-DP curve (the private hyper-parameter search, whose bound
    is an RDP bound): a history holding one is composed in RDP."""

    orders: tuple[float, ...]
    rdp: tuple[float, ...]


@dataclass(frozen=True)
class Opaque:
    """A DP mechanism known only by its (ε, δ): composed with basic composition."""

    epsilon: float
    delta: float


@dataclass(frozen=True)
class Parallel:
    """Mechanisms run on disjoint parts of one data set (federated clients, each training on its
    own records): part k's history is `parts[k]`. Each record is in exactly one part, so what it
    is exposed to is its own part's history (parallel composition); a history holding this entry
    is bounded by the worst part, each part composed with everything else in the history."""

    parts: tuple[tuple[GaussianSteps, ...], ...]


Mechanism = GaussianSteps | RDPCurve | Opaque | Parallel


def branches(history: Sequence[Mechanism]) -> list[tuple[Mechanism, ...]]:
    """The flat histories a record can have been exposed to: one per choice of a part in every
    Parallel entry (the parts of two Parallel entries need not be the same partition, so every
    combination is kept: an upper bound), duplicates removed. No Parallel entry: the history."""
    flat: list[tuple[Mechanism, ...]] = [()]
    for mechanism in history:
        if isinstance(mechanism, Parallel):
            parts = list(dict.fromkeys(mechanism.parts)) or [()]
            flat = list(dict.fromkeys(b + part for b in flat for part in parts))
        else:
            flat = [b + (mechanism,) for b in flat]
    return flat


def _gaussian_epsilon(history: Sequence[GaussianSteps], *, delta: float, accountant: str) -> float:
    entries = [(m.noise_multiplier, m.sample_rate, m.steps) for m in history if m.steps > 0]
    if not entries:
        return 0.0
    if any(sigma <= 0 for sigma, _, _ in entries):
        return math.inf
    return history_epsilon(entries, delta=delta, accountant=accountant)


def _rdp_epsilon(
    history: Sequence[GaussianSteps], curves: Sequence[RDPCurve], *, delta: float
) -> float:
    """ε of Gaussian entries and RDP curves composed in RDP (curves add order by order)."""
    orders = curves[0].orders
    if any(c.orders != orders for c in curves):
        raise ValueError("RDP curves on different orders cannot be composed")
    total = np.sum([np.asarray(c.rdp, dtype=float) for c in curves], axis=0)
    for m in history:
        if m.steps > 0:
            if m.noise_multiplier <= 0:
                return math.inf
            total = total + gaussian_rdp(
                noise_multiplier=m.noise_multiplier,
                sample_rate=m.sample_rate,
                steps=m.steps,
                orders=orders,
            )
    return rdp_epsilon(total, delta=delta, orders=orders)


def compose(history: Sequence[Mechanism], *, delta: float, accountant: str = "prv") -> Guarantee:
    """(ε, δ) of running every mechanism in history (adaptively) on the same data set.

    Gaussian entries are composed by `accountant` at `delta`, or, when the history holds an RDP
    curve, in RDP together with it (then the guarantee's accountant is "rdp"); opaque entries
    are added to the result (basic composition), their δ's too.
    """
    if accountant not in ACCOUNTANTS:
        raise ValueError(f"unknown accountant '{accountant}' (known: {', '.join(ACCOUNTANTS)})")
    if not 0 < delta < 1:
        raise ValueError(f"delta must be in (0, 1), got {delta}")
    flat = branches(history)
    if len(flat) == 1:
        return _compose(flat[0], delta, accountant)
    # Parallel composition: each record's guarantee is its own branch's; report the worst.
    results = [_compose(b, delta, accountant) for b in flat]
    if any(r.epsilon is None for r in results):
        return Guarantee(None, None, results[0].accountant)
    worst_eps = max(r.epsilon or 0.0 for r in results)
    worst_delta = max(r.delta or 0.0 for r in results)
    return Guarantee(worst_eps, worst_delta, results[0].accountant)


@functools.lru_cache(maxsize=256)
def _compose(history: tuple[Mechanism, ...], delta: float, accountant: str) -> Guarantee:
    """compose() memoised: a run's ledger asks for the same history after every stage, and a PRV
    evaluation takes about a second."""
    gaussian = [m for m in history if isinstance(m, GaussianSteps)]
    curves = [m for m in history if isinstance(m, RDPCurve)]
    opaque = [m for m in history if isinstance(m, Opaque)]
    if curves:
        eps, accountant = _rdp_epsilon(gaussian, curves, delta=delta), "rdp"
    else:
        eps = _gaussian_epsilon(gaussian, delta=delta, accountant=accountant)
    eps += math.fsum(m.epsilon for m in opaque)
    total_delta = delta + math.fsum(m.delta for m in opaque)
    return Guarantee(None if math.isinf(eps) else eps, total_delta, accountant)
