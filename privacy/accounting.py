"""Privacy accounting for Poisson-subsampled Gaussian mechanisms (DP-SGD, LADP) via Opacus.

Every step of LADP and DP-SGD is one Poisson-subsampled Gaussian mechanism with noise multiplier
σ and sampling rate q (DESIGN §5.6), so one (σ, q, steps) triple determines ε for a given δ.
All functions take keyword arguments and raise ValueError with one line on bad input.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterator, Sequence
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

MAX_NOISE_MULTIPLIER = 1e6
CALIBRATION_RTOL = 2e-3  # stop when the σ bracket is this narrow (relative) ...
CALIBRATION_ETOL = 5e-3  # ... or when ε(σ) is this close below the target (relative)


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


def _check_common(*, delta: float, sample_rate: float, accountant: str) -> None:
    if accountant not in ACCOUNTANTS:
        raise ValueError(f"unknown accountant '{accountant}' (known: {', '.join(ACCOUNTANTS)})")
    if not 0.0 < delta < 1.0:
        raise ValueError(f"delta must be in (0, 1), got {delta}")
    if not 0.0 < sample_rate <= 1.0:
        raise ValueError(f"sample rate q must be in (0, 1], got {sample_rate}")


def _check_epsilon(epsilon: float) -> None:
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
    _check_common(delta=delta, sample_rate=sample_rate, accountant=accountant)
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


def calibrate_noise_multiplier(
    *,
    target_epsilon: float,
    delta: float,
    sample_rate: float,
    steps: int,
    accountant: str = "prv",
) -> float:
    """The smallest σ (to 0.2% in σ or 0.5% in ε) whose accounted ε after `steps` is <= target.

    The search keeps a bracket (lo, hi) with ε(hi) <= target verified by the accountant and
    returns hi, so the answer is never above the target.
    """
    _check_epsilon(target_epsilon)
    _check_common(delta=delta, sample_rate=sample_rate, accountant=accountant)
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")

    def epsilon_of(mechanism: str) -> Callable[[float], float]:
        return lambda sigma: compute_epsilon(
            noise_multiplier=sigma,
            sample_rate=sample_rate,
            steps=steps,
            delta=delta,
            accountant=mechanism,
        )

    start, factor = 1.0, 2.0
    if accountant == "prv":
        # RDP is cheaper and looser (it needs more noise for the same ε): its σ is a feasible
        # start for PRV, whose σ is typically 5-15% lower, so PRV is only evaluated near it.
        try:
            start = _solve(epsilon_of("rdp"), target_epsilon, start=start, factor=factor)
            factor = 1.25
        except ValueError:
            pass  # below RDP's floor of ε (~0.1) PRV may still get there: search from 1
    return _solve(epsilon_of(accountant), target_epsilon, start=start, factor=factor)


def _solve(eps: Callable[[float], float], target: float, *, start: float, factor: float) -> float:
    lo, hi, e_lo, e_hi = _bracket(eps, target, start=start, factor=factor)
    while hi - lo > CALIBRATION_RTOL * hi and e_hi < (1 - CALIBRATION_ETOL) * target:
        mid = _interpolate(lo, hi, e_lo, e_hi, target * (1 - CALIBRATION_ETOL / 2))
        e_mid = eps(mid)
        if e_mid <= target:
            hi, e_hi = mid, e_mid
        else:
            lo, e_lo = mid, e_mid
    return hi


def _bracket(
    eps: Callable[[float], float], target: float, *, start: float, factor: float
) -> tuple[float, float, float, float]:
    """(lo, hi, ε(lo), ε(hi)) with ε(lo) > target >= ε(hi), stepping by `factor` from start."""
    e_start = eps(start)
    if e_start <= target:
        hi, e_hi = start, e_start
        lo, e_lo = hi / factor, eps(hi / factor)
        while e_lo <= target:  # ε(σ) -> ∞ as σ -> 0, so this ends
            hi, e_hi = lo, e_lo
            lo, e_lo = lo / factor, eps(lo / factor)
        return lo, hi, e_lo, e_hi
    lo, e_lo = start, e_start
    hi, e_hi = start * factor, eps(start * factor)
    while e_hi > target:
        lo, e_lo = hi, e_hi
        hi = hi * factor
        if hi > MAX_NOISE_MULTIPLIER:
            raise ValueError(
                "privacy budget too small: even noise multiplier 1e6 exceeds the target epsilon"
            )
        e_hi = eps(hi)
    return lo, hi, e_lo, e_hi


def _interpolate(lo: float, hi: float, e_lo: float, e_hi: float, aim: float) -> float:
    """Next σ to try: log ε is nearly linear in log σ, so interpolate there (regula falsi),
    kept 10% inside the bracket so that it shrinks by at least that much every step."""
    margin = 0.1 * (hi - lo)
    if not (math.isfinite(e_lo) and e_hi > 0):
        return 0.5 * (lo + hi)
    f_lo, f_hi = math.log(e_lo / aim), math.log(e_hi / aim)
    if f_lo <= f_hi:  # numerical noise of the accountant: fall back to bisection
        return 0.5 * (lo + hi)
    x = math.log(lo) + (math.log(hi) - math.log(lo)) * f_lo / (f_lo - f_hi)
    return min(max(math.exp(x), lo + margin), hi - margin)


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
    _check_epsilon(target_epsilon)
    _check_common(delta=delta, sample_rate=sample_rate, accountant=accountant)
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
