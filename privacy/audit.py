"""The mechanism side of `pipeline audit`: short trainings of a run's own engine, with and without
a white-box gradient canary (Nasr et al. 2023, "Tight auditing of differentially private machine
learning").

The canary is a record whose per-example gradient, in every parameter group l, is a huge vector
along a fixed random unit direction u_l; it is in the batch of every step (the adversary's best
case, q = 1 for the canary) and is clipped by the engine's own clip factor, so it moves group l's
clipped sum by exactly C_l·u_l. Everything else is the engine the training stage runs:
Poisson sampling of the members, the allocation schedule (public data), the fast path, the noise
draw, the division by the expected batch size and the optimizer. A trial releases the parameters
after a few steps; the auditor reads their displacement along each u_l. Neighbouring worlds are
the members with and without the canary (add/remove), with the same (σ, q, steps).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from models.zoo import seeded_model
from privacy.clipping import ClippedSumFn
from privacy.config import LADPConfig
from privacy.engines import build_engine
from privacy.fastpath import clip_factor
from privacy.groups import LayerGroup
from privacy.randomness import child_seed

CANARY_SCALE = 1e3  # the canary's gradient norm, in units of its group's clip norm


def canary_directions(
    model: nn.Module, groups: Sequence[LayerGroup], *, seed: int
) -> dict[str, dict[str, Tensor]]:
    """Per group: a random unit vector over the group's parameters (public randomness)."""
    gen = torch.Generator().manual_seed(seed)
    params = dict(model.named_parameters())
    directions = {}
    for g in groups:
        parts = {n: torch.randn(params[n].shape, generator=gen) for n in g.param_names}
        norm = math.sqrt(sum(float(v.pow(2).sum()) for v in parts.values()))
        directions[g.name] = {n: v / norm for n, v in parts.items()}
    return directions


def with_canary(
    clipped_sums: ClippedSumFn, directions: dict[str, dict[str, Tensor]]
) -> ClippedSumFn:
    """The engine's clipped sums plus the canary's clipped gradient, in every step's batch."""

    def sums(
        model: nn.Module, x: Tensor, y: Tensor, groups: Sequence[LayerGroup]
    ) -> dict[str, Tensor]:
        out = clipped_sums(model, x, y, groups)
        for g in groups:
            norm = CANARY_SCALE * g.clip_norm
            factor = float(clip_factor(torch.tensor([norm]), g.clip_norm)[0])
            for n, u in directions[g.name].items():
                out[n] = out[n] + (factor * norm) * u.to(out[n].device, out[n].dtype)
        return out

    return sums


@dataclass(frozen=True, eq=False)
class TrialJob:
    """Picklable: `trials` short trainings in one world (with or without the canary)."""

    engine: str  # privacy.engines name
    config: dict[str, Any]  # LADPConfig fields, noise_multiplier fixed to the run's σ
    arch: dict[str, Any]  # {"name", "kwargs"} of the model registry
    init_seed: int  # the run's initial weights
    seed: int  # the engine's public randomness (the stage's)
    x: np.ndarray  # the members
    y: np.ndarray
    public: tuple[np.ndarray, np.ndarray]
    canary: bool
    steps: int
    noise_seeds: tuple[int | None, ...]  # one per trial; None: secure (fresh OS entropy)
    direction_seed: int


@dataclass(frozen=True, eq=False)
class TrialResult:
    displacements: np.ndarray  # (trials, groups): (θ_0 - θ_T) · u_l per group
    groups: tuple[LayerGroup, ...]  # the groups of the last step (clip norms and weights)
    noise_multiplier: float
    sample_rate: float


def run_trials(job: TrialJob) -> TrialResult:
    """Train `len(job.noise_seeds)` times for job.steps steps; read each group's displacement."""
    config = LADPConfig.from_settings(job.config)
    kwargs = {**job.arch["kwargs"], "in_shape": tuple(job.arch["kwargs"]["in_shape"])}
    rows = []
    groups: tuple[LayerGroup, ...] = ()
    sigma = q = math.nan
    directions: dict[str, dict[str, Tensor]] = {}
    for noise_seed in job.noise_seeds:
        model = seeded_model(job.arch["name"], seed=job.init_seed, **kwargs)
        engine = build_engine(
            job.engine,
            model,
            job.x,
            job.y,
            config=config,
            seed=job.seed,
            noise_seed=noise_seed,
            public=job.public,
        )
        # The same public directions in every trial (and world): drawn once.
        directions = directions or canary_directions(model, engine.groups, seed=job.direction_seed)
        if job.canary:
            engine.clipped_sums = with_canary(engine.clipped_sums, directions)
        start = {n: p.detach().clone() for n, p in model.named_parameters()}
        for _ in range(job.steps):
            engine.step()
        params = dict(model.named_parameters())
        rows.append(
            [
                sum(
                    float(((start[n] - params[n].detach()) * u).sum())
                    for n, u in directions[g.name].items()
                )
                for g in engine.groups
            ]
        )
        groups, sigma, q = tuple(engine.current_groups), engine.sigma, engine.q
    return TrialResult(np.asarray(rows, dtype=np.float64), groups, sigma, q)


def trial_seeds(noise_seed: int | None, world: int, trials: int) -> tuple[int | None, ...]:
    """Independent noise per trial: fresh entropy, or (reproducible runs) derived seeds."""
    return tuple(child_seed(noise_seed, world, t) for t in range(trials))
