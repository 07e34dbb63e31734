"""Rényi-DP curves on one shared grid of orders: the Poisson-subsampled Gaussian's curve and the
conversion of a curve to (ε, δ) (Opacus's, Balle et al. 2020 Thm 21, best order).

PATE, the private hyper-parameter search and the composition of RDP curves all use `RDP_ORDERS`,
so that curves of different mechanisms on the same data add order by order.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np
from opacus.accountants.analysis.rdp import compute_rdp, get_privacy_spent

# Opacus's default orders (1.1 ... 63) extended to 1024: a few PATE queries with large σ, and the
# search's log(1/γ)/λ̂ term when one run is very private, are optimal at high orders.
RDP_ORDERS: tuple[float, ...] = tuple(
    float(order)
    for order in (
        *(1 + x / 10.0 for x in range(1, 100)),
        *range(12, 64),
        *(64, 80, 96, 128, 160, 192, 256, 384, 512, 768, 1024),
    )
)


def check_curve(
    orders: Sequence[float], rdp: Sequence[float] | np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(orders, curve) as float arrays; ValueError (one line) unless 1-d, equal length, every
    order > 1 and no NaN. A slightly negative value is floating-point noise and raised to 0."""
    lam = np.asarray(orders, dtype=float)
    eps = np.asarray(rdp, dtype=float)
    if lam.ndim != 1 or lam.shape != eps.shape or lam.size == 0:
        raise ValueError(
            f"orders and rdp must be 1-d and of equal length, got {lam.shape}, {eps.shape}"
        )
    if not np.all(lam > 1):
        raise ValueError(f"every Renyi order must be > 1, got min {lam.min()}")
    if np.any(np.isnan(eps)):
        raise ValueError("rdp contains NaN")
    # Raising a curve is always valid.
    return lam, np.maximum(eps, 0.0)


def gaussian_rdp(
    *,
    noise_multiplier: float,
    sample_rate: float,
    steps: int,
    orders: Sequence[float] = RDP_ORDERS,
) -> np.ndarray:
    """RDP at `orders` of `steps` Poisson-subsampled Gaussian steps (Opacus, add/remove)."""
    if not (noise_multiplier >= 0 and math.isfinite(noise_multiplier)):
        raise ValueError(f"noise multiplier must be a finite number >= 0, got {noise_multiplier}")
    if not 0.0 < sample_rate <= 1.0:
        raise ValueError(f"sample rate q must be in (0, 1], got {sample_rate}")
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    if not all(order > 1 for order in orders):
        raise ValueError("every Renyi order must be > 1")
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        rdp = compute_rdp(
            q=float(sample_rate),
            noise_multiplier=float(noise_multiplier),
            steps=int(steps),
            orders=[float(order) for order in orders],
        )
    return np.asarray(rdp, dtype=float)


def rdp_epsilon(
    rdp: Sequence[float] | np.ndarray, *, delta: float, orders: Sequence[float] = RDP_ORDERS
) -> float:
    """ε at δ of an RDP curve (Opacus's conversion, Balle et al. 2020 Thm 21, best order)."""
    if not 0.0 < delta < 1.0:
        raise ValueError(f"delta must be in (0, 1), got {delta}")
    lam, eps = check_curve(orders, rdp)
    if np.all(np.isinf(eps)):
        return math.inf
    with warnings.catch_warnings(), np.errstate(invalid="ignore"):
        # Opacus warns when the best order is at the grid's edge: that only costs tightness.
        warnings.simplefilter("ignore")
        epsilon, _ = get_privacy_spent(orders=list(lam), rdp=list(eps), delta=delta)
    return max(float(epsilon), 0.0)  # ε < 0 would mean (0, δ)-DP, which ε = 0 also states
