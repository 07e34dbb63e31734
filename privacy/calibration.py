"""Calibrating the noise multiplier σ to a target ε: the one solver of privcomp.

`calibrate_noise_multiplier` finds the smallest σ such that `steps` Poisson-subsampled Gaussian
steps (σ, q), composed after a history of earlier mechanisms on the same data (none for a fresh
training, the training for a DP fine-tune), stay within the target. `smallest_noise_multiplier`
is its root finder on any ε(σ) that falls with σ (the private hyper-parameter search uses it on
its own bound). The answer is always the upper end of a bracket whose ε was computed, so it never
exceeds the target.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from privacy.accounting import check_sampled_gaussian, check_target_epsilon, format_epsilon
from privacy.composition import GaussianSteps, Mechanism, compose

MAX_NOISE_MULTIPLIER = 1e6
CALIBRATION_RTOL = 2e-3  # stop when the σ bracket is this narrow (relative) ...
CALIBRATION_ETOL = 5e-3  # ... or when ε(σ) is this close below the target (relative to the room)

EpsilonFn = Callable[[float], float]


def calibrate_noise_multiplier(
    *,
    target_epsilon: float,
    delta: float,
    sample_rate: float,
    steps: int,
    accountant: str = "prv",
    history: Sequence[Mechanism] = (),
) -> float:
    """The smallest σ (to 0.2% in σ, or 0.5% in ε) with which `history` followed by `steps`
    Poisson-subsampled Gaussian steps (σ, sample_rate) compose to at most target_epsilon.

    ValueError (one line) when the history alone already spends the target.
    """
    check_target_epsilon(target_epsilon)
    check_sampled_gaussian(delta=delta, sample_rate=sample_rate, accountant=accountant)
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    before = tuple(history)

    def spent(mechanism: str) -> float:
        """ε of the history alone: what no σ can take back."""
        if not before:
            return 0.0
        eps = compose(before, delta=delta, accountant=mechanism).epsilon
        return math.inf if eps is None else eps

    def epsilon_of(mechanism: str) -> EpsilonFn:
        def epsilon(sigma: float) -> float:
            steps_after = GaussianSteps(sigma, sample_rate, steps)
            eps = compose((*before, steps_after), delta=delta, accountant=mechanism).epsilon
            return math.inf if eps is None else eps

        return epsilon

    floor = spent(accountant)
    if floor >= target_epsilon:
        raise ValueError(
            f"the history already spends epsilon = {format_epsilon(floor, digits=4)} >= target "
            f"{target_epsilon:g}: no noise multiplier can fit more steps"
        )
    start, factor = 1.0, 2.0
    if accountant == "prv":
        # RDP is cheaper and looser (it needs more noise for the same ε): its σ is a feasible
        # start for PRV, whose σ is typically 5-15% lower, so PRV is only evaluated near it.
        try:
            start = smallest_noise_multiplier(
                epsilon_of("rdp"), target_epsilon, start=start, factor=factor, floor=spent("rdp")
            )
            factor = 1.25
        except ValueError:
            pass  # below RDP's floor of ε (~0.1, or its bound of the history) PRV may still fit
    return smallest_noise_multiplier(
        epsilon_of(accountant), target_epsilon, start=start, factor=factor, floor=floor
    )


def smallest_noise_multiplier(
    epsilon_of: EpsilonFn, target: float, *, start: float, factor: float, floor: float = 0.0
) -> float:
    """The smallest σ (to CALIBRATION_RTOL in σ, or CALIBRATION_ETOL in ε) with ε(σ) <= target,
    for an ε(σ) that falls with σ towards `floor` (0 for a mechanism alone). The search keeps a
    bracket (lo, hi) with ε(hi) <= target verified and returns hi.

    Searched in the room above the floor, ε(σ) - floor, which falls roughly like a power of σ:
    nearly linear in log-log, the regula falsi's best case.
    """
    if floor >= target:
        raise ValueError(f"epsilon {target:g} leaves no room above {floor:g}")
    lo, hi, e_lo, e_hi = _bracket(epsilon_of, target, start=start, factor=factor)
    room = target - floor
    aim = floor + room * (1 - CALIBRATION_ETOL / 2)
    while hi - lo > CALIBRATION_RTOL * hi and e_hi - floor < (1 - CALIBRATION_ETOL) * room:
        mid = _interpolate(lo, hi, e_lo - floor, e_hi - floor, aim - floor)
        e_mid = epsilon_of(mid)
        if e_mid <= target:
            hi, e_hi = mid, e_mid
        else:
            lo, e_lo = mid, e_mid
    return hi


def _bracket(
    epsilon_of: EpsilonFn, target: float, *, start: float, factor: float
) -> tuple[float, float, float, float]:
    """(lo, hi, ε(lo), ε(hi)) with ε(lo) > target >= ε(hi), stepping by `factor` from start."""
    e_start = epsilon_of(start)
    if e_start <= target:
        hi, e_hi = start, e_start
        lo, e_lo = hi / factor, epsilon_of(hi / factor)
        while e_lo <= target:  # ε(σ) -> ∞ as σ -> 0, so this ends
            hi, e_hi = lo, e_lo
            lo, e_lo = lo / factor, epsilon_of(lo / factor)
        return lo, hi, e_lo, e_hi
    lo, e_lo = start, e_start
    hi, e_hi = start * factor, epsilon_of(start * factor)
    while e_hi > target:
        lo, e_lo = hi, e_hi
        hi = hi * factor
        if hi > MAX_NOISE_MULTIPLIER:
            raise ValueError(
                "privacy budget too small: even noise multiplier 1e6 exceeds the target epsilon"
            )
        e_hi = epsilon_of(hi)
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
