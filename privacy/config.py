"""LADP's configuration, and the mechanism it fixes before any private data is read: the Poisson
rate q, the planned steps and the noise multiplier σ_eff calibrated to (ε, δ).

The defaults are the pipeline's ([train-ladp] takes its defaults from these fields): lr and
allocation were chosen at ε = 3 by training on seed 0's non-members ∪ population (never a default
run's members) and scoring on the public split (README, BENCHMARKS.md accuracy section).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from privacy.accounting import ACCOUNTANTS, max_steps_within_budget
from privacy.calibration import calibrate_noise_multiplier
from privacy.groups import ALLOCATIONS

OPTIMIZERS = ("sgd", "adam")
# Where the DP-SGD baseline ("dp-sgd" in privacy.engines) takes its per-example gradients from:
# Opacus's GradSampleModule (independent of privcomp), or privcomp's own clipping on the flat
# group (privacy.fastpath where it supports the model, else privacy.clipping's vmap).
PER_EXAMPLE = ("opacus", "privcomp")


@dataclass(frozen=True)
class LADPConfig:
    epsilon: float = 3.0
    delta: float = 1e-5
    epochs: int = 30
    expected_batch_size: int = 250
    # Best for allocation "matched" (public accuracy 0.898; "uniform" does best at lr 0.05, with
    # 0.866), chosen as the module docstring says.
    lr: float = 0.1
    momentum: float = 0.5
    clip_norm: float = 1.0
    accountant: str = "prv"
    optimizer: str = "sgd"  # "sgd" (with momentum) or "adam"
    weight_decay: float = 0.0
    # A fixed σ_eff instead of calibrating it to (epsilon, delta); the budget is still enforced,
    # so training stops early when this σ cannot afford the planned steps.
    noise_multiplier: float | None = None
    # Full LADP (DESIGN §5.2-§5.5). Every allocation but "uniform" measures Fisher
    # sensitivities on the public split (the engine's public_x, public_y), re-measured every
    # fisher_every steps on fisher_samples examples.
    # "matched" (the default): clip norms in proportion to each group's RMS public gradient norm
    # with Σ C_l² = clip_norm², weights C_l² / clip_norm² (flat DP-SGD's noise per coordinate).
    # "uniform" (needs no public data): every group clipped at clip_norm, equal weights.
    # "utility" / "protect": the top sensitive_fraction of groups clipped at clip_sensitive,
    # the others at clip_other; weights softmax(±tau · z). Values: the original study's (§10).
    allocation: str = "matched"
    tau: float = 1.0
    sensitive_fraction: float = 0.5
    clip_sensitive: float = 1.0
    clip_other: float = 5.0
    fisher_every: int = 100
    fisher_samples: int = 256
    # Exact per-example clipping from activations and output gradients (privacy.fastpath) when
    # every group is made of whole Linear / Conv2d / GroupNorm modules; else the vmap reference
    # path.
    fast_path: bool = True
    # DP-SGD only (LADP ignores it): "opacus" or "privcomp", see PER_EXAMPLE. The mechanism is
    # the same either way (flat clipping at clip_norm, weight 1); "privcomp" runs where Opacus
    # fails (torchvision's resnet18: in-place residual adds).
    per_example: str = "opacus"

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any]) -> LADPConfig:
        """From a table of settings (a pipeline section, a job's recipe): its LADPConfig fields,
        the other keys ignored."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in settings.items() if k in known})

    def check(self, n: int) -> None:
        """ValueError (one line) for a configuration that gives no DP guarantee on n examples."""
        if n < 1:
            raise ValueError("train-ladp needs at least one training example")
        if not (math.isfinite(self.epsilon) and self.epsilon > 0):
            raise ValueError(f"epsilon must be a finite number > 0, got {self.epsilon}")
        if not 0 < self.delta < 1 / n:
            raise ValueError(f"delta must be in (0, 1/n) = (0, {1 / n:.3g}) for n = {n}")
        if self.epochs < 1 or self.expected_batch_size < 1:
            raise ValueError("epochs and expected_batch_size must be >= 1")
        if not (self.lr > 0 and 0 <= self.momentum < 1 and self.weight_decay >= 0):
            raise ValueError("need lr > 0, 0 <= momentum < 1 and weight_decay >= 0")
        if not all(math.isfinite(v) for v in (self.lr, self.weight_decay, self.tau)):
            raise ValueError("lr, weight_decay and tau must be finite numbers")
        if not (math.isfinite(self.clip_norm) and self.clip_norm > 0):
            raise ValueError(f"clip_norm must be a finite number > 0, got {self.clip_norm}")
        if self.accountant not in ACCOUNTANTS:
            raise ValueError(f"unknown accountant '{self.accountant}' (known: prv, rdp)")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer '{self.optimizer}' (known: sgd, adam)")
        if self.allocation not in ALLOCATIONS:
            raise ValueError(
                f"unknown allocation '{self.allocation}' (known: {', '.join(ALLOCATIONS)})"
            )
        if self.per_example not in PER_EXAMPLE:
            raise ValueError(
                f"unknown per_example '{self.per_example}' (known: {', '.join(PER_EXAMPLE)})"
            )
        clips = (self.clip_sensitive, self.clip_other)
        if not all(math.isfinite(c) and c > 0 for c in clips):
            raise ValueError("clip_sensitive and clip_other must be finite numbers > 0")
        if not (0 <= self.sensitive_fraction <= 1 and math.isfinite(self.tau) and self.tau >= 0):
            raise ValueError("need 0 <= sensitive_fraction <= 1 and tau >= 0")
        if self.fisher_every < 1 or self.fisher_samples < 1:
            raise ValueError("fisher_every and fisher_samples must be >= 1")
        sigma = self.noise_multiplier
        if sigma is not None and not (math.isfinite(sigma) and sigma > 0):
            raise ValueError(f"noise_multiplier must be a finite number > 0, got {sigma}")


def sampling_plan(expected_batch_size: int, epochs: int, n: int) -> tuple[float, int]:
    """(Poisson rate q, planned steps) for `epochs` passes over n examples."""
    # A batch larger than the data set means full-batch steps: q = 1 is still Poisson sampling.
    q = min(1.0, expected_batch_size / n)
    return q, max(1, round(epochs / q))


def plan_noise(config: LADPConfig, n: int) -> tuple[float, int, float, int]:
    """(q, planned steps, σ_eff, steps within the budget) for a run on n examples."""
    config.check(n)
    q, planned = sampling_plan(config.expected_batch_size, config.epochs, n)
    eps, delta, accountant = config.epsilon, config.delta, config.accountant
    sigma = config.noise_multiplier
    if sigma is None:
        sigma = calibrate_noise_multiplier(
            target_epsilon=eps, delta=delta, sample_rate=q, steps=planned, accountant=accountant
        )
    steps = max_steps_within_budget(
        target_epsilon=eps,
        noise_multiplier=sigma,
        sample_rate=q,
        delta=delta,
        accountant=accountant,
        limit=planned,
    )
    if steps == 0:
        raise ValueError(
            f"noise multiplier {sigma:.4g} is too small: not one step fits in "
            f"epsilon = {config.epsilon}, delta = {config.delta}"
        )
    return q, planned, sigma, steps
