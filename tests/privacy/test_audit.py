"""Empirical privacy audit of one LADP step: a test that fails when the noise is too small.

Neighbouring batches D and D' = D + canary, q = 1, one step. The canary's gradient is far above
the clip norm of every layer, so it moves each group's clipped sum by exactly C_l. The clipped
sums are computed once (the real fast path); only the noise is redrawn, by the real
`noisy_gradient`, vectorised over a leading axis of draws. The auditor projects the released
per-layer sums on the canary's direction, weighting group l by 1 / (claimed σ_l C_l)² (the
likelihood-ratio statistic if the claim is true), and turns the two samples into:

- a Clopper–Pearson ε lower bound: threshold chosen on held-out draws, rates bounded at 95% each on
  fresh draws; ε_lb = max over both tails of log((1 - δ - FNR_ub) / FPR_ub);
- a GDP estimate: μ̂ = (mean' - mean) / sd, its lower 99.9% bound μ_lo, and ε = the tight
  Gaussian ε(μ_lo, δ).

The honest step must stay below the claimed single-step ε (compute_epsilon, q = 1, steps = 1) on
both; a step with the noise halved, or with every layer noised with σ_eff instead of σ_l, must be
caught (GDP estimate above the claim; with the noise halved the Clopper–Pearson bound too: with
20,000 draws it cannot certify much more than ε ≈ 5, so μ = √3 / σ_eff (the σ_eff-per-layer bug,
three layers) stays below it while the GDP estimate catches it).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import pytest
import torch
from scipy import optimize, stats
from torch import nn

from privacy.accounting import compute_epsilon
from privacy.fastpath import fast_clipped_grad_sums
from privacy.ladp import LayerGroup, layer_groups, noisy_gradient

torch.set_num_threads(1)
DRAWS = 20_000  # per side, for the evaluation (as many again, held out, choose the threshold)
SIGMA_EFF = 1.0
DELTA = 1e-5
CONFIDENCE = 0.95

Release = Callable[[dict[str, torch.Tensor], Sequence[LayerGroup], torch.Generator], dict]


def gaussian_epsilon(mu: float, delta: float) -> float:
    """Tight ε of a μ-GDP mechanism at δ (Dong, Roth, Su 2019, Corollary 2.13)."""
    if mu <= 0:
        return 0.0

    def gap(eps: float) -> float:
        return (
            stats.norm.cdf(-eps / mu + mu / 2)
            - math.exp(eps) * stats.norm.cdf(-eps / mu - mu / 2)
            - delta
        )

    if gap(0.0) <= 0:
        return 0.0
    return float(optimize.brentq(gap, 0.0, 100.0))


def clopper_pearson_upper(k: int, n: int, confidence: float) -> float:
    return 1.0 if k >= n else float(stats.beta.ppf(confidence, k + 1, n - k))


def cp_epsilon(held: tuple[np.ndarray, np.ndarray], fresh: tuple[np.ndarray, np.ndarray]) -> float:
    """ε lower bound from a threshold test (threshold picked on `held`, rates from `fresh`)."""
    out, inn = held
    best_t, best = 0.0, -math.inf
    for t in np.quantile(np.concatenate([out, inn]), np.linspace(0.5, 0.9995, 400)):
        fpr = (np.sum(out > t) + 1) / len(out)
        fnr = (np.sum(inn <= t) + 1) / len(inn)
        score = math.log(max(1 - DELTA - fnr, 1e-12) / fpr)
        if score > best:
            best_t, best = float(t), score
    out, inn = fresh
    fpr_ub = clopper_pearson_upper(int(np.sum(out > best_t)), len(out), CONFIDENCE)
    fnr_ub = clopper_pearson_upper(int(np.sum(inn <= best_t)), len(inn), CONFIDENCE)
    return max(0.0, math.log(max(1 - DELTA - fnr_ub, 1e-300) / fpr_ub))


def gdp_epsilon(out: np.ndarray, inn: np.ndarray) -> float:
    """ε of the lower 99.9% confidence bound on μ estimated from the two samples."""
    sd = math.sqrt((out.var(ddof=1) + inn.var(ddof=1)) / 2)
    mu = (inn.mean() - out.mean()) / sd
    se = math.sqrt(1 / len(out) + 1 / len(inn) + mu**2 / (4 * len(out)))
    return gaussian_epsilon(mu - stats.norm.ppf(0.999) * se, DELTA)


def tiny_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 4), nn.ReLU(), nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 3))


def audit_groups(model: nn.Module) -> list[LayerGroup]:
    """Uneven weights and clip norms, as the Fisher allocation produces."""
    weights, clips = (0.6, 0.3, 0.1), (1.0, 5.0, 1.0)
    return [
        LayerGroup(g.name, g.param_names, c, w)
        for g, w, c in zip(layer_groups(model), weights, clips, strict=True)
    ]


def honest(
    sums: dict[str, torch.Tensor], groups: Sequence[LayerGroup], gen: torch.Generator
) -> dict:
    return noisy_gradient(sums, groups, sigma_eff=SIGMA_EFF, expected_batch_size=8, generator=gen)


def noise_halved(
    sums: dict[str, torch.Tensor], groups: Sequence[LayerGroup], gen: torch.Generator
) -> dict:
    return noisy_gradient(
        sums, groups, sigma_eff=SIGMA_EFF / 2, expected_batch_size=8, generator=gen
    )


def sigma_eff_per_layer(
    sums: dict[str, torch.Tensor], groups: Sequence[LayerGroup], gen: torch.Generator
) -> dict:
    """The classic bug: each layer gets σ_eff (weight 1) instead of σ_l = σ_eff / sqrt(w_l)."""
    flat = [LayerGroup(g.name, g.param_names, g.clip_norm, 1.0) for g in groups]
    return noisy_gradient(sums, flat, sigma_eff=SIGMA_EFF, expected_batch_size=8, generator=gen)


def audit(release: Release) -> tuple[float, float]:
    """(Clopper–Pearson ε lower bound, GDP ε estimate) of one step of `release`."""
    model = tiny_model()
    groups = audit_groups(model)
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(8, 5, generator=gen), torch.randint(0, 3, (8,), generator=gen)
    canary_x = 1e3 * torch.randn(1, 5, generator=gen)
    with torch.no_grad():  # the least likely label: a large loss, a gradient far above clipping
        canary_y = model(canary_x).argmin(1)
    base = fast_clipped_grad_sums(model, x, y, groups)
    with_canary = fast_clipped_grad_sums(
        model, torch.cat([x, canary_x]), torch.cat([y, canary_y]), groups
    )
    direction = {n: with_canary[n] - base[n] for n in base}
    stds = {g.name: SIGMA_EFF / math.sqrt(g.weight) * g.clip_norm for g in groups}
    for g in groups:  # the canary sits at the clip norm of every layer
        moved = math.sqrt(sum(direction[n].pow(2).sum().item() for n in g.param_names))
        assert moved == pytest.approx(g.clip_norm, rel=1e-3), g.name

    def statistic(sums: dict[str, torch.Tensor], draws: int) -> np.ndarray:
        batched = {n: s.expand(draws, *s.shape) for n, s in sums.items()}
        released = release(batched, groups, gen)
        total = torch.zeros(draws, dtype=torch.float64)
        for g in groups:
            for n in g.param_names:
                centred = released[n] * 8 - base[n]  # undo the division; centre on D
                proj = (centred * direction[n]).flatten(1).sum(1).double()
                total += proj / stds[g.name] ** 2
        return total.numpy()

    held = statistic(base, DRAWS), statistic(with_canary, DRAWS)
    fresh = statistic(base, DRAWS), statistic(with_canary, DRAWS)
    return cp_epsilon(held, fresh), gdp_epsilon(*fresh)


def claimed_epsilon() -> float:
    return compute_epsilon(noise_multiplier=SIGMA_EFF, sample_rate=1.0, steps=1, delta=DELTA)


def test_gaussian_epsilon_helper_is_consistent() -> None:
    # The PRV accountant's single full-batch step equals the tight Gaussian ε (μ = 1/σ).
    assert gaussian_epsilon(1 / SIGMA_EFF, DELTA) == pytest.approx(claimed_epsilon(), rel=0.02)


def test_honest_step_passes_the_audit() -> None:
    cp, gdp = audit(honest)
    claimed = claimed_epsilon()
    print(f"honest: CP eps_lb {cp:.3f}, GDP eps {gdp:.3f}, claimed {claimed:.3f}")
    assert cp < claimed
    assert gdp < claimed
    assert gdp > 0.5 * claimed  # the audit is strong enough to be near-tight


@pytest.mark.parametrize("broken", [noise_halved, sigma_eff_per_layer])
def test_broken_step_is_caught(broken: Release) -> None:
    cp, gdp = audit(broken)
    claimed = claimed_epsilon()
    print(f"{broken.__name__}: CP eps_lb {cp:.3f}, GDP eps {gdp:.3f}, claimed {claimed:.3f}")
    assert gdp > claimed
    if broken is noise_halved:  # μ = 2 / σ_eff: even the distribution-free bound sees it
        assert cp > claimed
