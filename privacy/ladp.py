"""LADP: layer-wise adaptive DP-SGD (DESIGN §5), as a provable DP mechanism.

One step, for parameter groups l = 1..L with clip norms C_l and weights w_l (Σ w_l = 1):

1. Poisson sampling: each of the n examples joins the batch independently with rate q.
2. Per-example, per-group clipping: g_{i,l} -> c_{i,l} g_{i,l}, c_{i,l} = min(1, C_l / ||g_{i,l}||).
3. Group l gets Gaussian noise of std σ_l C_l on its clipped sum, σ_l = σ_eff / sqrt(w_l).
4. Divide by the expected batch size q n (not the realised one, which depends on the data),
   then an optimizer step (post-processing).

Why this is a Poisson-subsampled Gaussian mechanism with noise multiplier σ_eff: rescale group l
by 1 / (σ_l C_l). The noise becomes unit-variance everywhere, and one example moves the rescaled
sum by at most sqrt(Σ_l (C_l / (σ_l C_l))²) = sqrt(Σ_l w_l) / σ_eff = 1 / σ_eff. The groups are
composed *inside* one step, before subsampling, so the accountant sees one mechanism per step.

The parts: privacy.groups (groups, σ_l), privacy.sensitivity (the allocation from public Fisher
sensitivities), privacy.clipping and privacy.fastpath (clipped sums), privacy.step (noise, the
update), privacy.config (LADPConfig, the plan of q, steps and σ_eff). This module runs them as one
engine. Extension points: `make_private(groups=..., group_schedule=..., clipped_sums=...)`.
Group choices must depend only on public data and the current model (post-processing), never on
the private batch.

Sampling and noise come from privacy.randomness: secure (fresh OS entropy, never recorded) unless
the caller passes a `noise_seed` (reproducible, for experiments: ε does not hold against anyone
who has that seed).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from models.training import ProgressFn
from privacy.accounting import compute_epsilon
from privacy.clipping import ClippedSumFn, auto_clipped_sums, clipped_grad_sums
from privacy.config import LADPConfig, plan_noise
from privacy.groups import GroupSchedule, LayerGroup, check_groups, layer_groups
from privacy.randomness import mechanism_rngs, noise_mode, poisson_sample
from privacy.sensitivity import fisher_schedule
from privacy.step import apply_gradient, noisy_gradient


@dataclass(frozen=True)
class PrivacySpend:
    """What a DP training run spent; epsilon is the accountant's bound for the steps taken."""

    epsilon: float
    delta: float
    accountant: str
    noise_multiplier: float  # σ_eff
    sample_rate: float
    steps: int
    mechanism: str = "ladp"
    noise: str = "secure"  # privacy.randomness.noise_mode: "secure" or "reproducible"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class LADPResult:
    model: nn.Module
    spend: PrivacySpend
    steps_planned: int
    steps_taken: int
    stopped_at_budget: bool
    noise_seed: int | None = None  # what sampling and noise derive from; None when secure


def _optimizer(model: nn.Module, config: LADPConfig) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)
    return torch.optim.SGD(
        params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
    )


def _check_per_example(model: nn.Module) -> None:
    """BatchNorm mixes examples in a batch, so per-example clipping would not bound them."""
    for name, module in model.named_modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            raise ValueError(f"LADP needs per-example gradients: replace BatchNorm '{name}'")


def _fisher_schedule(
    config: LADPConfig,
    public_x: np.ndarray | None,
    public_y: np.ndarray | None,
    *,
    device: torch.device,
    seed: int,
) -> GroupSchedule:
    if public_x is None or public_y is None or len(public_x) == 0:
        raise ValueError(
            f"allocation '{config.allocation}' needs public data (public_x, public_y); "
            "allocation 'uniform' needs none"
        )
    if len(public_x) != len(public_y):
        raise ValueError("public_x and public_y differ in length")
    return fisher_schedule(
        torch.as_tensor(public_x, dtype=torch.float32, device=device),
        torch.as_tensor(public_y, dtype=torch.long, device=device),
        mode=config.allocation,
        tau=config.tau,
        sensitive_fraction=config.sensitive_fraction,
        clip_sensitive=config.clip_sensitive,
        clip_other=config.clip_other,
        clip_norm=config.clip_norm,
        every=config.fisher_every,
        samples=config.fisher_samples,
        seed=seed,
    )


def default_clipped_sums(config: LADPConfig) -> ClippedSumFn:
    """The clipped-sum computation a run with this config uses (the audit wraps the same)."""
    return auto_clipped_sums if config.fast_path else clipped_grad_sums


class LADPEngine:
    """One LADP run, step by step: what `make_private` returns (the library front door).

    Usage, in the spirit of Opacus's PrivacyEngine.make_private:

        engine = make_private(model, x, y, config=LADPConfig(epsilon=3), seed=0,
                              public_x=px, public_y=py)
        while not engine.done:
            engine.step()          # Poisson sample, clip per layer, noise, optimizer step
        engine.spend()             # PrivacySpend of the steps taken

    The engine owns the private data, the sampling and the noise: a caller cannot feed it a
    batch of its choice, so every step is the accounted mechanism. It stops before the budget.
    `seed` drives public randomness only (the public sample of the Fisher re-measurements);
    sampling and noise are secure unless `noise_seed` is given (reproducible: privacy.randomness).

    A step is a template (as Opacus's DPOptimizer.pre_step): `groups_for_step` (public data and
    the model only), `sample_batch` (Poisson), `clipped_sums`, `noisy_gradient` (noise, then
    division by the expected batch size), optimizer step. Tests and the audit call these same
    methods; a mutated phase makes them fail.
    """

    def __init__(
        self,
        model: nn.Module,
        x: np.ndarray,
        y: np.ndarray,
        *,
        config: LADPConfig,
        seed: int,
        noise_seed: int | None = None,
        groups: Sequence[LayerGroup] | None = None,
        group_schedule: GroupSchedule | None = None,
        clipped_sums: ClippedSumFn | None = None,
        public_x: np.ndarray | None = None,
        public_y: np.ndarray | None = None,
        mechanism: str = "ladp",
        planned_n: int | None = None,
    ) -> None:
        if len(x) != len(y):
            raise ValueError(f"x and y differ in length: {len(x)} vs {len(y)}")
        if not np.isfinite(x).all():
            raise ValueError("training data contains NaN or infinite values")
        _check_per_example(model)
        # planned_n: the number of examples q and the steps are planned for, len(x) by default. A
        # federated client plans with a public count (the members split evenly over the clients)
        # instead of its own shard's size, so that its q, steps, σ and the division by the
        # expected batch size read nothing of its data; sampling still runs over len(x), which
        # may be 0 (then every step releases noise only, the same mechanism on the empty set).
        n = len(x)
        plan_n = n if planned_n is None else int(planned_n)
        config.check(plan_n)
        fixed = groups if groups is not None else layer_groups(model, clip_norm=config.clip_norm)
        self.groups = list(fixed)
        check_groups(model, self.groups)
        self.q, self.steps_planned, self.sigma, self.steps_allowed = plan_noise(config, plan_n)
        self.planned_n = plan_n
        device = next(model.parameters()).device
        if group_schedule is None and config.allocation != "uniform":
            group_schedule = _fisher_schedule(config, public_x, public_y, device=device, seed=seed)
        self.model, self.config, self.n, self.mechanism = model, config, n, mechanism
        self.clipped_sums = clipped_sums or default_clipped_sums(config)
        self.group_schedule = group_schedule
        self.x = torch.as_tensor(x, dtype=torch.float32, device=device)
        self.y = torch.as_tensor(y, dtype=torch.long, device=device)
        self.noise_seed = noise_seed
        self._sample_rng, self._noise_rng = mechanism_rngs(noise_seed, 2)
        self.optimizer = _optimizer(model, config)
        self.steps_taken = 0
        self.current_groups = self.groups  # the groups of the latest step
        model.train()

    @property
    def done(self) -> bool:
        """True once the next step would pass the (ε, δ) budget or the planned epochs are done."""
        return self.steps_taken >= self.steps_allowed

    @property
    def expected_batch_size(self) -> float:
        return self.q * self.planned_n

    def groups_for_step(self) -> list[LayerGroup]:
        if not self.group_schedule:
            return self.groups
        current = list(self.group_schedule(self.model, self.steps_taken))
        check_groups(self.model, current)
        return current

    def sample_batch(self) -> Tensor:
        """Poisson sampling: every example joins independently with probability q."""
        batch = poisson_sample(self._sample_rng, self.n, self.q)
        return torch.as_tensor(batch, dtype=torch.long, device=self.x.device)

    def noisy_gradient(
        self, sums: dict[str, Tensor], groups: Sequence[LayerGroup]
    ) -> dict[str, Tensor]:
        return noisy_gradient(
            sums,
            groups,
            sigma_eff=self.sigma,
            expected_batch_size=self.expected_batch_size,
            rng=self._noise_rng,
        )

    def step(self) -> None:
        if self.done:
            raise RuntimeError("LADP budget spent: no step left")
        groups = self.groups_for_step()
        batch = self.sample_batch()
        sums = self.clipped_sums(self.model, self.x[batch], self.y[batch], groups)
        apply_gradient(self.model, self.optimizer, self.noisy_gradient(sums, groups))
        self.current_groups = groups
        self.steps_taken += 1

    def spend(self) -> PrivacySpend:
        epsilon = (
            compute_epsilon(
                noise_multiplier=self.sigma,
                sample_rate=self.q,
                steps=self.steps_taken,
                delta=self.config.delta,
                accountant=self.config.accountant,
            )
            if self.steps_taken
            else 0.0
        )
        return PrivacySpend(
            epsilon=epsilon,
            delta=self.config.delta,
            accountant=self.config.accountant,
            noise_multiplier=self.sigma,
            sample_rate=self.q,
            steps=self.steps_taken,
            mechanism=self.mechanism,
            noise=noise_mode(self.noise_seed),
        )

    def run(self, progress: ProgressFn | None = None) -> LADPResult:
        """Step until the planned epochs or the budget, whichever comes first."""
        while not self.done:
            self.step()
            if progress:
                progress(self.steps_taken, self.steps_allowed)
        return self.result()

    def result(self) -> LADPResult:
        return LADPResult(
            model=self.model.eval(),
            spend=self.spend(),
            steps_planned=self.steps_planned,
            steps_taken=self.steps_taken,
            stopped_at_budget=self.steps_taken < self.steps_planned,
            noise_seed=self.noise_seed,
        )


def make_private(
    model: nn.Module,
    x: np.ndarray,
    y: np.ndarray,
    *,
    config: LADPConfig | None = None,
    seed: int = 0,
    noise_seed: int | None = None,
    public_x: np.ndarray | None = None,
    public_y: np.ndarray | None = None,
    groups: Sequence[LayerGroup] | None = None,
    group_schedule: GroupSchedule | None = None,
    clipped_sums: ClippedSumFn | None = None,
) -> LADPEngine:
    """Front door: an LADPEngine for model on the private (x, y); see LADPEngine.

    config: LADPConfig() by default, the pipeline's defaults: its allocation ("matched") reads
    public_x, public_y. groups, group_schedule, clipped_sums: as in train_ladp.
    """
    return LADPEngine(
        model,
        x,
        y,
        config=config or LADPConfig(),
        seed=seed,
        noise_seed=noise_seed,
        groups=groups,
        group_schedule=group_schedule,
        clipped_sums=clipped_sums,
        public_x=public_x,
        public_y=public_y,
    )


def train_ladp(
    model: nn.Module,
    x: np.ndarray,
    y: np.ndarray,
    *,
    config: LADPConfig,
    seed: int,
    noise_seed: int | None = None,
    progress: ProgressFn | None = None,
    groups: Sequence[LayerGroup] | None = None,
    group_schedule: GroupSchedule | None = None,
    clipped_sums: ClippedSumFn | None = None,
    public_x: np.ndarray | None = None,
    public_y: np.ndarray | None = None,
) -> LADPResult:
    """Train with LADP until the planned epochs or the (ε, δ) budget, whichever comes first.

    groups: fixed groups (default: `layer_groups` with config.clip_norm, uniform weights);
    group_schedule(model, step) overrides them per step; a config.allocation other than
    "uniform" builds that schedule from Fisher sensitivities on public_x, public_y (public data
    only: never the members). clipped_sums: default the fast path where supported
    (config.fast_path), else the reference path. seed: public randomness; noise_seed: None
    (secure sampling and noise, the default) or a seed to reproduce them. Returns the model in
    eval mode.
    """
    engine = LADPEngine(
        model,
        x,
        y,
        config=config,
        seed=seed,
        noise_seed=noise_seed,
        groups=groups,
        group_schedule=group_schedule,
        clipped_sums=clipped_sums,
        public_x=public_x,
        public_y=public_y,
    )
    return engine.run(progress)
