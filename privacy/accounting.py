"""Privacy accounting for Poisson-subsampled Gaussian mechanisms (DP-SGD, LADP) via Opacus.

Every step of LADP and DP-SGD is one Poisson-subsampled Gaussian mechanism with noise multiplier
σ and sampling rate q (DESIGN §5.6), so one (σ, q, steps) triple determines ε for a given δ.
All functions take keyword arguments and raise ValueError with one line on bad input. Histories
of mixed mechanisms compose in privacy.composition; σ is calibrated in privacy.calibration.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from functools import lru_cache
from typing import Any

import numpy as np
from opacus.accountants import PRVAccountant, RDPAccountant
from scipy import optimize, stats

ACCOUNTANTS: tuple[str, ...] = ("prv", "rdp")

# Opacus's PRV accountant discretises the privacy loss on a grid whose size grows with ε; past a
# few million points it needs gigabytes (and is killed on a laptop). Such grids only arise where
# ε is in the hundreds, and there the RDP bound, also a valid upper bound, is used instead.
PRV_MAX_GRID = 1 << 22


def format_epsilon(epsilon: float | None, *, digits: int = 3, lower_bound: bool = False) -> str:
    """ε for people: an upper bound (a guarantee) rounded UP to `digits` significant digits, so
    that the printed bound is never below the accountant's (".3g" would print a bound of 2.9949
    as "2.99"); a lower bound (an audit's) rounded DOWN, so that it never overstates the evidence.
    None or ∞: "inf". Stored values stay exact; only their display is rounded."""
    if epsilon is None or not math.isfinite(epsilon):
        return "inf"
    if epsilon <= 0:
        return "0"
    value = Decimal(repr(float(epsilon)))  # the shortest decimal that is exactly this float
    step = Decimal(1).scaleb(value.adjusted() - digits + 1)
    rounded = value.quantize(step, rounding=ROUND_FLOOR if lower_bound else ROUND_CEILING)
    text = f"{rounded:f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def check_sampled_gaussian(*, delta: float, sample_rate: float, accountant: str) -> None:
    """ValueError (one line) unless the accountant is known, 0 < δ < 1 and 0 < q <= 1."""
    if accountant not in ACCOUNTANTS:
        raise ValueError(f"unknown accountant '{accountant}' (known: {', '.join(ACCOUNTANTS)})")
    if not 0.0 < delta < 1.0:
        raise ValueError(f"delta must be in (0, 1), got {delta}")
    if not 0.0 < sample_rate <= 1.0:
        raise ValueError(f"sample rate q must be in (0, 1], got {sample_rate}")


def check_target_epsilon(epsilon: float) -> None:
    if not (math.isfinite(epsilon) and epsilon > 0):
        raise ValueError(f"target epsilon must be a finite number > 0, got {epsilon}")


class _GridTooLarge(Exception):
    pass


class _GuardedPRV(PRVAccountant):
    """Opacus's PRVAccountant, refusing grids over PRV_MAX_GRID before allocating them.

    _get_domain is private API of the pinned Opacus (1.6.0); overriding it keeps every number
    identical to a plain PRVAccountant while sizing the grid only once.
    """

    def _get_domain(self, *args: Any, **kwargs: Any) -> Any:
        domain = super()._get_domain(*args, **kwargs)
        if domain.size > PRV_MAX_GRID:
            raise _GridTooLarge
        return domain


@contextmanager
def _quiet() -> Iterator[None]:
    """q = 1 makes the PRV code take log(0) on purpose, and RDP warns when its best order is at
    the edge of its grid; both only affect tightness, never the validity of the bound."""
    with warnings.catch_warnings(), np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        warnings.simplefilter("ignore")
        yield


def history_epsilon(
    entries: Sequence[tuple[float, float, int]], *, delta: float, accountant: str
) -> float:
    """ε of a history of (σ, q, steps) Poisson-subsampled Gaussian entries composed by
    `accountant` (PRV falls back to RDP, also an upper bound, where its grid would be too big).
    Entries must have σ > 0 and steps > 0."""
    with _quiet():
        if accountant == "prv":
            prv = _GuardedPRV()
            prv.history = list(entries)
            try:
                return float(prv.get_epsilon(delta=delta))
            except _GridTooLarge:
                pass
        rdp = RDPAccountant()
        rdp.history = list(entries)
        return float(rdp.get_epsilon(delta=delta))


@lru_cache(maxsize=4096)
def _epsilon(sigma: float, q: float, steps: int, delta: float, accountant: str) -> float:
    # Cached: calibration, the budget search and the final report ask for the same points, and
    # every reference model of an attack repeats its target's calibration.
    return history_epsilon([(sigma, q, steps)], delta=delta, accountant=accountant)


def compute_epsilon(
    *,
    noise_multiplier: float,
    sample_rate: float,
    steps: int,
    delta: float,
    accountant: str = "prv",
) -> float:
    """ε after `steps` Poisson-subsampled Gaussian steps: an upper bound (PRV: its upper band)."""
    check_sampled_gaussian(delta=delta, sample_rate=sample_rate, accountant=accountant)
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    if not noise_multiplier >= 0:
        raise ValueError(f"noise multiplier must be >= 0, got {noise_multiplier}")
    if steps == 0:
        return 0.0  # nothing released
    if noise_multiplier == 0:
        return math.inf
    return _epsilon(
        float(noise_multiplier), float(sample_rate), int(steps), float(delta), accountant
    )


def max_steps_within_budget(
    *,
    target_epsilon: float,
    noise_multiplier: float,
    sample_rate: float,
    delta: float,
    accountant: str = "prv",
    limit: int,
) -> int:
    """Largest T <= limit with ε(T) <= target_epsilon (0 if not even one step fits).

    ε grows with T; the binary search keeps ε(lo) <= target verified, so the answer is safe
    even where the numerical accountant is not exactly monotone.
    """
    check_target_epsilon(target_epsilon)
    check_sampled_gaussian(delta=delta, sample_rate=sample_rate, accountant=accountant)
    if limit < 0:
        raise ValueError(f"step limit must be >= 0, got {limit}")

    def within(steps: int) -> bool:
        eps = compute_epsilon(
            noise_multiplier=noise_multiplier,
            sample_rate=sample_rate,
            steps=steps,
            delta=delta,
            accountant=accountant,
        )
        return eps <= target_epsilon

    if within(limit):
        return limit
    lo, hi = 0, limit  # ε(0) = 0 <= target; ε(limit) > target
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if within(mid):
            lo = mid
        else:
            hi = mid
    return lo


def gaussian_epsilon(mu: float, delta: float) -> float:
    """Tight ε at δ of a μ-GDP mechanism (Dong, Roth & Su 2019, Corollary 2.13): the ε of one
    full-batch Gaussian step with noise multiplier 1/μ."""
    if not 0 < delta < 1:
        raise ValueError(f"delta must be in (0, 1), got {delta}")
    if not mu > 0:
        return 0.0
    if not math.isfinite(mu):
        return math.inf

    def gap(eps: float) -> float:
        return float(
            stats.norm.cdf(-eps / mu + mu / 2)
            - math.exp(eps) * stats.norm.cdf(-eps / mu - mu / 2)
            - delta
        )

    if gap(0.0) <= 0:
        return 0.0
    high = 1.0
    while gap(high) > 0:  # δ(ε) falls to 0 as ε grows
        high *= 2
    return float(optimize.brentq(gap, 0.0, high))
