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

Extension points for the full LADP (Fisher sensitivities, allocation, the fast path):
`train_ladp(groups=..., group_schedule=..., clipped_sums=...)`. Group choices must depend only on
public data and the current model (post-processing), never on the private batch.

Sampling and noise come from privacy.randomness: secure (fresh OS entropy, never recorded) unless
the caller passes a `noise_seed` (reproducible, for experiments: ε does not hold against anyone
who has that seed).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, grad, vmap

from models.training import ProgressFn
from privacy.accounting import ACCOUNTANTS, compute_epsilon, max_steps_within_budget
from privacy.calibration import calibrate_noise_multiplier
from privacy.fastpath import clip_factor, fast_clipped_grad_sums, supports_fast_path
from privacy.randomness import mechanism_rngs, noise_mode, poisson_sample, standard_normal

OPTIMIZERS = ("sgd", "adam")
ALLOCATIONS = ("uniform", "utility", "protect", "matched")
# Per-example gradients of one chunk are held at once. Small chunks are also faster: blocks
# over 32 MiB go back to the OS on free (glibc), and re-faulting them each step, plus the cache
# misses, cost several times the arithmetic (measured on the cnn: chunks of ~14 are best).
CHUNK_BYTES = 24 << 20
WEIGHT_SUM_TOL = 1e-6


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
class LADPConfig:
    epsilon: float = 3.0
    delta: float = 1e-5
    epochs: int = 30
    expected_batch_size: int = 250
    # For allocation "uniform" (the library default): its best lr at ε = 3 on seed 0's
    # non-members ∪ population, scored on public; "matched" prefers 0.1 (the pipeline's default).
    lr: float = 0.05
    momentum: float = 0.5
    clip_norm: float = 1.0
    accountant: str = "prv"
    optimizer: str = "sgd"  # "sgd" (with momentum) or "adam"
    weight_decay: float = 0.0
    # A fixed σ_eff instead of calibrating it to (epsilon, delta); the budget is still enforced,
    # so training stops early when this σ cannot afford the planned steps.
    noise_multiplier: float | None = None
    # Full LADP (DESIGN §5.2-§5.5). "uniform" (the default here because it needs no public
    # data; the pipeline defaults to "matched"): every group clipped at clip_norm, equal weights.
    # The others measure Fisher sensitivities on the public split (train_ladp's public_x,
    # public_y), re-measured every fisher_every steps on fisher_samples examples.
    # "matched": clip norms in proportion to each group's RMS public gradient norm with
    # Σ C_l² = clip_norm², weights C_l² / clip_norm² (flat DP-SGD's noise per coordinate).
    # "utility" / "protect": the top sensitive_fraction of groups clipped at clip_sensitive,
    # the others at clip_other; weights softmax(±tau · z). Values: the original study's (§10).
    allocation: str = "uniform"
    tau: float = 1.0
    sensitive_fraction: float = 0.5
    clip_sensitive: float = 1.0
    clip_other: float = 5.0
    fisher_every: int = 100
    fisher_samples: int = 256
    # Exact per-example clipping from activations and output gradients (privacy.fastpath) when
    # every group is a Linear / Conv2d / GroupNorm module; else the vmap reference path.
    fast_path: bool = True

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


@dataclass(frozen=True)
class LayerGroup:
    """Parameters clipped together to clip_norm; weight is the group's share of 1/σ_eff²."""

    name: str
    param_names: tuple[str, ...]
    clip_norm: float
    weight: float


@dataclass(frozen=True)
class LADPResult:
    model: nn.Module
    spend: PrivacySpend
    steps_planned: int
    steps_taken: int
    stopped_at_budget: bool
    noise_seed: int | None = None  # what sampling and noise derive from; None when secure


# (model, x, y, groups) -> {param name: Σ_i c_{i,l} g_{i,l}}; the fast path replaces this.
ClippedSumFn = Callable[[nn.Module, Tensor, Tensor, Sequence[LayerGroup]], dict[str, Tensor]]
# (model, step) -> groups for this step; may look at public data and the model only.
GroupSchedule = Callable[[nn.Module, int], Sequence[LayerGroup]]


def layer_groups(model: nn.Module, *, clip_norm: float = 1.0) -> list[LayerGroup]:
    """One group per module that owns trainable parameters (conv, linear, norm), weights 1/L."""
    owned = []
    for name, module in model.named_modules():
        params = [p for p, t in module.named_parameters(recurse=False) if t.requires_grad]
        if params:
            full = tuple(f"{name}.{p}" if name else p for p in params)
            owned.append((name or "<root>", full))
    if not owned:
        raise ValueError("model has no trainable parameters")
    weight = 1.0 / len(owned)
    return [
        LayerGroup(name=name, param_names=names, clip_norm=clip_norm, weight=weight)
        for name, names in owned
    ]


def check_groups(model: nn.Module, groups: Sequence[LayerGroup]) -> None:
    """Every trainable parameter in exactly one group, and Σ w_l = 1: else the proof fails."""
    if not groups:
        raise ValueError("LADP needs at least one parameter group")
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    listed = [n for g in groups for n in g.param_names]
    if len(listed) != len(set(listed)) or set(listed) != trainable:
        raise ValueError("LADP groups must cover every trainable parameter exactly once")
    for g in groups:
        if not (math.isfinite(g.clip_norm) and g.clip_norm > 0):
            raise ValueError(f"group '{g.name}': clip norm must be finite and > 0")
    total = math.fsum(g.weight for g in groups)
    if abs(total - 1.0) > WEIGHT_SUM_TOL:
        raise ValueError(f"LADP group weights must sum to 1, got {total:.6g}")


def group_noise_stds(sigma_eff: float, weights: Sequence[float]) -> list[float]:
    """σ_l = σ_eff / sqrt(w_l): with Σ w_l = 1, Σ σ_l⁻² = σ_eff⁻² (the accounted multiplier)."""
    if not (math.isfinite(sigma_eff) and sigma_eff >= 0):
        raise ValueError(f"sigma_eff must be finite and >= 0, got {sigma_eff}")
    if any(not (math.isfinite(w) and w > 0) for w in weights):
        raise ValueError("group weights must be finite and > 0")
    return [sigma_eff / math.sqrt(w) for w in weights]


def per_example_grads(
    model: nn.Module, x: Tensor, y: Tensor, param_names: Sequence[str]
) -> dict[str, Tensor]:
    """Per-example gradients of the cross-entropy loss (leading dimension = examples)."""
    all_params = dict(model.named_parameters())
    params = {n: all_params[n].detach() for n in param_names}

    def loss(p: dict[str, Tensor], xi: Tensor, yi: Tensor) -> Tensor:
        # Parameters not passed (frozen ones) and buffers come from the module itself.
        out = functional_call(model, p, (xi.unsqueeze(0),))
        return F.cross_entropy(out, yi.unsqueeze(0))

    # "different": each example draws its own dropout mask, as in ordinary batched training.
    per_example = vmap(grad(loss), in_dims=(None, 0, 0), randomness="different")
    return per_example(params, x, y)


def clip_factors(grads: dict[str, Tensor], groups: Sequence[LayerGroup]) -> dict[str, Tensor]:
    """Per group: c_{i,l} = min(1, C_l / ||g_{i,l}||), one factor per example."""
    factors = {}
    for g in groups:
        # vector_norm reduces in place; g.pow(2) would copy the (large) per-example grads.
        per_param = [torch.linalg.vector_norm(grads[n].flatten(1), dim=1) for n in g.param_names]
        norms = torch.linalg.vector_norm(torch.stack(per_param), dim=0)
        factors[g.name] = clip_factor(norms, g.clip_norm)
    return factors


def examples_per_chunk(model: nn.Module) -> int:
    """How many examples' per-example gradients fit in CHUNK_BYTES."""
    per_example = sum(p.numel() * p.element_size() for p in model.parameters())
    return max(1, CHUNK_BYTES // max(1, per_example))


def clipped_grad_sums(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    groups: Sequence[LayerGroup],
    *,
    chunk_size: int | None = None,
) -> dict[str, Tensor]:
    """Reference path: Σ_i c_{i,l} g_{i,l} per parameter, from materialised per-example grads.

    Examples are processed in chunks so that memory stays bounded; chunking changes nothing in
    the result. An empty batch gives zeros.
    """
    params = dict(model.named_parameters())
    names = [n for g in groups for n in g.param_names]
    sums = {n: torch.zeros_like(params[n], memory_format=torch.contiguous_format) for n in names}
    step = chunk_size or examples_per_chunk(model)
    for start in range(0, len(x), step):
        grads = per_example_grads(model, x[start : start + step], y[start : start + step], names)
        factors = clip_factors(grads, groups)
        for g in groups:
            for n in g.param_names:
                sums[n] += torch.tensordot(factors[g.name], grads[n], dims=1)
    return sums


def noisy_gradient(
    sums: dict[str, Tensor],
    groups: Sequence[LayerGroup],
    *,
    sigma_eff: float,
    expected_batch_size: float,
    rng: np.random.Generator,
) -> dict[str, Tensor]:
    """(clipped sum + N(0, (σ_l C_l)²)) / expected batch size, per parameter of group l."""
    stds = group_noise_stds(sigma_eff, [g.weight for g in groups])
    out = {}
    for g, sigma_l in zip(groups, stds, strict=True):
        for n in g.param_names:
            s = sums[n]
            # Drawn on the CPU so that one seed gives the same noise on every device.
            noise = standard_normal(rng, s.shape, s.dtype).to(s.device)
            out[n] = (s + (sigma_l * g.clip_norm) * noise) / expected_batch_size
    return out


def auto_clipped_sums(
    model: nn.Module, x: Tensor, y: Tensor, groups: Sequence[LayerGroup]
) -> dict[str, Tensor]:
    """The fast path where it supports every group, else the reference path (same sums)."""
    if supports_fast_path(model, groups):
        return fast_clipped_grad_sums(model, x, y, groups)
    return clipped_grad_sums(model, x, y, groups)


def ladp_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    x: Tensor,
    y: Tensor,
    *,
    groups: Sequence[LayerGroup],
    sigma_eff: float,
    expected_batch_size: float,
    rng: np.random.Generator,
    clipped_sums: ClippedSumFn = clipped_grad_sums,
) -> None:
    """One LADP update on an already sampled batch (possibly empty: then pure noise)."""
    sums = clipped_sums(model, x, y, groups)
    grads = noisy_gradient(
        sums, groups, sigma_eff=sigma_eff, expected_batch_size=expected_batch_size, rng=rng
    )
    apply_gradient(model, optimizer, grads)


def apply_gradient(
    model: nn.Module, optimizer: torch.optim.Optimizer, grads: dict[str, Tensor]
) -> None:
    """The optimizer step on the released gradient (post-processing)."""
    params = dict(model.named_parameters())
    for n, g in grads.items():
        params[n].grad = g
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def _optimizer(model: nn.Module, config: LADPConfig) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)
    return torch.optim.SGD(
        params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
    )


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
    from privacy.sensitivity import fisher_schedule  # imports this module

    if public_x is None or public_y is None or len(public_x) == 0:
        raise ValueError(f"allocation '{config.allocation}' needs public data (public_x, public_y)")
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
    ) -> None:
        if len(x) != len(y):
            raise ValueError(f"x and y differ in length: {len(x)} vs {len(y)}")
        if not np.isfinite(x).all():
            raise ValueError("training data contains NaN or infinite values")
        _check_per_example(model)
        n = len(x)
        config.check(n)
        fixed = groups if groups is not None else layer_groups(model, clip_norm=config.clip_norm)
        self.groups = list(fixed)
        check_groups(model, self.groups)
        self.q, self.steps_planned, self.sigma, self.steps_allowed = plan_noise(config, n)
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
        return self.q * self.n

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
    **hooks: Any,
) -> LADPEngine:
    """Front door: an LADPEngine for model on the private (x, y); see LADPEngine."""
    return LADPEngine(
        model,
        x,
        y,
        config=config or LADPConfig(),
        seed=seed,
        noise_seed=noise_seed,
        public_x=public_x,
        public_y=public_y,
        **hooks,
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
    group_schedule(model, step) overrides them per step; config.allocation "utility" or
    "protect" builds that schedule from Fisher sensitivities on public_x, public_y (public data
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
