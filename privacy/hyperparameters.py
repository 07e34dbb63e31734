"""Private hyper-parameter search: accounting and the random number of repetitions.

Mechanism (Papernot & Steinke 2022, "Hyperparameter Tuning with Renyi Differential Privacy",
arXiv 2110.03620): draw the number of repetitions K at random (`draw_repetitions`); for each
repetition draw one candidate setting uniformly from a fixed list and train it with full DP on
the private data; release only the best model by a public score (e.g. accuracy on the public
split). What is released is that one model and its public score. K, the other candidates, their
models, scores and timings must never be released, logged into an artifact or used to decide
anything visible: the bounds below cover only "the best of K", and K itself leaks (a fixed K
would make the search cost K runs composed).

Accounting, as RDP bounds on the whole search given the RDP curve ε(λ) of one repetition:

- Truncated negative binomial K (Theorem 2; shape η = 0 is the logarithmic distribution, η = 1
  the geometric): ε'(λ) = ε(λ) + (1+η)·min_λ̂ [(1 - 1/λ̂)·ε(λ̂) + log(1/γ)/λ̂] + log E[K]/(λ-1),
  then RDP's monotonicity in λ.
- Poisson K (Theorem 6): ε'(λ) = ε(λ) + μ·δ̂ + log(μ)/(λ-1), where one repetition is (ε̂, δ̂)-DP
  at ε̂ = log(1 + 1/(λ-1)); here with the K = 0 outcome kept in the bound (see `_poisson_rdp`).
  Poisson can draw K = 0, i.e. no model at all, so the pipeline uses the truncated negative
  binomial (K >= 1) by default.

Each bound is an RDP curve on `RDP_ORDERS` (privacy.rdp), so privacy.composition composes a
search with the other mechanisms on the same data by adding RDP curves (an upper bound under
adaptive composition) and converts to (ε, δ) once, with Opacus's conversion (`rdp_epsilon`). The
neighbouring relation is Opacus's add/remove, like the rest of privcomp.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from privacy.calibration import MAX_NOISE_MULTIPLIER, smallest_noise_multiplier
from privacy.rdp import RDP_ORDERS, check_curve, gaussian_rdp, rdp_epsilon

DISTRIBUTIONS: tuple[str, ...] = ("negative-binomial", "poisson")
_GAMMA_RTOL = 1e-12  # relative width at which the bisection for the TNB parameter γ stops


@dataclass(frozen=True)
class SearchConfig:
    """How many repetitions a search makes: K ~ TNB(η, γ) with E[K] = mean, or Poisson(mean).

    Defaults, from the search ε at the σ where one run (q = 0.125, 240 steps, δ = 1e-5) has RDP
    ε = 2.99 (σ = 3.08); composing 2 or 3 fixed runs would cost 4.37 or 5.49:

    - mean 3: about three candidates for an expected three runs of compute; the cost grows like
      log E[K] (η = 0: ε 3.92 / 4.22 / 4.53 / 4.89 at mean 2 / 3 / 5 / 10) while the chance of
      trying a good candidate grows ever more slowly, so more runs mostly buy noise.
    - shape 0 (logarithmic): the cheapest TNB (mean 3: ε 4.22 at η = 0, 4.47 at 0.5, 4.66 at 1,
      4.96 at 2) and, at equal ε (4.2), the one that most often tries the single good candidate
      of four (0.46 at η = 0 with mean 2.9, 0.40 geometric with mean 2.0, 0.44 for two fixed
      runs at ε 4.37). Its price is a longer tail (99th percentile of K: 17 against 12 for the
      geometric at mean 3) and P(K = 1) = 0.44.
    - Poisson (mean 3: ε 4.12) is cheaper still but returns no model with probability e^-3 = 5%.
    """

    distribution: str = "negative-binomial"
    mean: float = 3.0
    shape: float = 0.0

    def check(self) -> None:
        if self.distribution not in DISTRIBUTIONS:
            raise ValueError(
                f"unknown distribution '{self.distribution}' (known: {', '.join(DISTRIBUTIONS)})"
            )
        if not (math.isfinite(self.shape) and self.shape >= 0):
            raise ValueError(f"shape must be a finite number >= 0, got {self.shape}")
        if self.distribution == "poisson":
            if not (math.isfinite(self.mean) and self.mean > 0):
                raise ValueError(f"Poisson mean must be a finite number > 0, got {self.mean}")
        elif not (math.isfinite(self.mean) and self.mean >= 1):
            raise ValueError(
                f"negative-binomial mean must be a finite number >= 1, got {self.mean}"
            )


def _tnb_mean(gamma: float, shape: float) -> float:
    """E[K] of the truncated negative binomial: P(K = k) ∝ C(k+η-1, k)·(1-γ)^k for k >= 1."""
    if gamma >= 1.0:
        return 1.0  # the limit: all mass on K = 1
    if shape == 0:  # logarithmic
        return (1.0 - gamma) / (gamma * -math.log(gamma))
    # 1 - γ^η by expm1: for small η, γ^η is close to 1 and the difference would cancel.
    return shape * (1.0 - gamma) / (gamma * -math.expm1(shape * math.log(gamma)))


@lru_cache(maxsize=256)
def _tnb_gamma(shape: float, mean: float) -> float:
    """γ with E[K] = mean, by bisection (E[K] falls as γ grows). Returns the lower end of the
    bracket: a slightly smaller γ is a slightly larger E[K] and log(1/γ), both conservative, and
    K is drawn with this same γ, so the bound is for the distribution actually sampled."""
    if mean == 1.0:
        return 1.0
    if shape == 1.0:
        return 1.0 / mean  # geometric: E[K] = 1/γ exactly
    lo, hi = 0.0, 1.0  # E[K](lo) = ∞ > mean > 1 = E[K](hi)
    while hi - lo > _GAMMA_RTOL * hi:
        mid = 0.5 * (lo + hi)
        if _tnb_mean(mid, shape) >= mean:
            lo = mid
        else:
            hi = mid
    return lo


def _log_delta(lam: np.ndarray, eps: np.ndarray, epsilon: float) -> float:
    """log δ at which a mechanism with RDP curve eps is (epsilon, δ)-DP, minimised over orders.

    Per order, the conversion Opacus uses for ε (Balle et al. 2020, Thm 21; Canonne, Kamath &
    Steinke 2020), solved for δ: (λ-1)(ε(λ) - epsilon + log(1 - 1/λ)) - log λ. Near λ = 1 the
    total-variation bound δ <= TV <= sqrt(1 - exp(-KL)) with KL <= ε(λ) is tighter and also valid.
    """
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        rdp_bound = (lam - 1) * (eps - epsilon + np.log1p(-1 / lam)) - np.log(lam)
        tv_bound = 0.5 * np.log(-np.expm1(-eps))
    best = float(np.nanmin(np.minimum(rdp_bound, tv_bound)))
    return min(best, 0.0)  # δ <= 1 always


def _poisson_rdp(lam: np.ndarray, eps: np.ndarray, mu: float) -> np.ndarray:
    """Theorem 6 with the outcome K = 0 kept.

    With the density of the best of K ~ Poisson(μ) written out, the proof bounds the sum over
    released models by μ·exp((λ-1)(ε(λ) + μδ̂)); the outcome "no model" (K = 0) has probability
    e^-μ under both neighbours and adds e^-μ to exp((λ-1)·D_λ). The published ε + μδ̂ + log(μ)/(λ-1)
    leaves it out, which is wrong for μ < 1 (it goes negative as μ -> 0), so we keep it:
    ε' = ε + μδ̂ + log(μ + exp(-μ - (λ-1)(ε + μδ̂)))/(λ-1), never below the published value and
    within log(1 + e^-μ/μ)/(λ-1) of it.
    """
    out = np.empty_like(eps)
    for i, (order, e) in enumerate(zip(lam, eps, strict=True)):
        eps_hat = math.log1p(1 / (order - 1))  # the largest ε̂ with e^ε̂ <= 1 + 1/(λ-1)
        delta_hat = math.exp(_log_delta(lam, eps, eps_hat))
        base = e + mu * delta_hat
        if not math.isfinite(base):
            out[i] = math.inf
            continue
        out[i] = base + math.log(mu + math.exp(-mu - (order - 1) * base)) / (order - 1)
    return out


def _tnb_rdp(lam: np.ndarray, eps: np.ndarray, *, shape: float, mean: float) -> np.ndarray:
    gamma = _tnb_gamma(shape, mean)
    expected = _tnb_mean(gamma, shape)  # >= mean: the E[K] of the γ that is sampled
    # Any λ̂ >= 1 gives a valid bound; the grid's best is the one we can certify.
    with np.errstate(invalid="ignore"):
        selection = np.nanmin((1 - 1 / lam) * eps + math.log(1 / gamma) / lam)
    return eps + (1 + shape) * selection + math.log(expected) / (lam - 1)


def search_rdp(
    orders: Sequence[float], rdp: Sequence[float] | np.ndarray, *, config: SearchConfig
) -> np.ndarray:
    """RDP curve at `orders` of "repeat K ~ config times, release only the best", given the RDP
    curve `rdp` of one repetition at the same orders (all > 1)."""
    config.check()
    lam, eps = check_curve(orders, rdp)
    if config.distribution == "poisson":
        out = _poisson_rdp(lam, eps, config.mean)
    else:
        out = _tnb_rdp(lam, eps, shape=config.shape, mean=config.mean)
    # RDP grows with λ, so a bound at a higher order also bounds every lower order.
    by_order = np.argsort(lam, kind="stable")
    suffix_min = np.minimum.accumulate(out[by_order][::-1])[::-1]
    result = np.empty_like(out)
    result[by_order] = suffix_min
    return result


@lru_cache(maxsize=4096)
def _search_epsilon(
    sigma: float, q: float, steps: int, delta: float, config: SearchConfig
) -> float:
    # Cached: calibration and the ledger ask for the same points.
    single = gaussian_rdp(noise_multiplier=sigma, sample_rate=q, steps=steps)
    return rdp_epsilon(search_rdp(RDP_ORDERS, single, config=config), delta=delta)


def _check_search(*, delta: float, sample_rate: float, steps: int, config: SearchConfig) -> None:
    config.check()
    if not 0.0 < delta < 1.0:
        raise ValueError(f"delta must be in (0, 1), got {delta}")
    if not 0.0 < sample_rate <= 1.0:
        raise ValueError(f"sample rate q must be in (0, 1], got {sample_rate}")
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")


def search_epsilon(
    *,
    noise_multiplier: float,
    sample_rate: float,
    steps: int,
    delta: float,
    config: SearchConfig,
) -> float:
    """ε at δ of a search whose every repetition is `steps` subsampled Gaussian steps at
    (noise_multiplier, sample_rate), by the RDP bounds of Papernot & Steinke."""
    _check_search(delta=delta, sample_rate=sample_rate, steps=steps, config=config)
    if not (noise_multiplier >= 0 and math.isfinite(noise_multiplier)):
        raise ValueError(f"noise multiplier must be a finite number >= 0, got {noise_multiplier}")
    if noise_multiplier == 0:
        return math.inf
    return _search_epsilon(
        float(noise_multiplier), float(sample_rate), int(steps), float(delta), config
    )


def calibrate_search_noise(
    *,
    target_epsilon: float,
    delta: float,
    sample_rate: float,
    steps: int,
    config: SearchConfig,
) -> float:
    """The smallest σ (to 0.2% in σ or 0.5% in ε) whose search is (target_epsilon, delta)-DP.

    privacy.calibration's solver keeps a bracket whose upper end is verified to meet the target
    and returns that end, so the answer is never above the target.
    """
    if not (math.isfinite(target_epsilon) and target_epsilon > 0):
        raise ValueError(f"target epsilon must be a finite number > 0, got {target_epsilon}")
    _check_search(delta=delta, sample_rate=sample_rate, steps=steps, config=config)

    def epsilon_of(sigma: float) -> float:
        if sigma > MAX_NOISE_MULTIPLIER:
            return math.inf
        return search_epsilon(
            noise_multiplier=sigma,
            sample_rate=sample_rate,
            steps=steps,
            delta=delta,
            config=config,
        )

    try:
        return smallest_noise_multiplier(epsilon_of, target_epsilon, start=1.0, factor=2.0)
    except ValueError:
        raise ValueError(
            f"privacy budget too small for the search: even noise multiplier 1e6 exceeds "
            f"epsilon {target_epsilon}"
        ) from None


def draw_repetitions(rng: np.random.Generator, config: SearchConfig) -> int:
    """K for one search: truncated negative binomial (K >= 1) or Poisson (K >= 0).

    The caller passes the mechanism's generator (secure by default, privacy.randomness); K is
    part of the mechanism's secret randomness and must not be released.
    """
    config.check()
    if config.distribution == "poisson":
        return int(rng.poisson(config.mean))
    gamma = _tnb_gamma(config.shape, config.mean)
    if gamma >= 1.0:
        return 1
    if config.shape == 0:
        return int(rng.logseries(1.0 - gamma))  # logarithmic: support k >= 1 already
    # numpy's negative_binomial(η, γ) counts failures before η successes: P(k) ∝
    # C(k+η-1, k)·(1-γ)^k on k >= 0. Conditioning on k >= 1 by rejection, in batches sized to
    # the acceptance rate 1 - γ^η so that a small η does not mean many small calls.
    accept = -math.expm1(config.shape * math.log(gamma))
    batch = int(min(max(math.ceil(2.0 / accept), 1), 1 << 16))
    while True:
        draws = rng.negative_binomial(config.shape, gamma, size=batch)
        positive = draws[draws >= 1]
        if positive.size:
            return int(positive[0])
