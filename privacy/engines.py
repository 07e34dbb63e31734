"""The DP training engines by name: the training stages, the private hyper-parameter search, the
auditor's reference models and `pipeline audit` all build their engine here, so that they run
the same mechanism (sampling, allocation, clipping, noise) as the stage that ships a model."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
from torch import nn

from privacy.accounting import compute_epsilon
from privacy.config import LADPConfig, sampling_plan
from privacy.dpsgd import dpsgd_engine
from privacy.ladp import LADPEngine

ENGINES: tuple[str, ...] = ("ladp", "dp-sgd")

Public = tuple[np.ndarray, np.ndarray]


def build_engine(
    kind: str,
    model: nn.Module,
    x: np.ndarray,
    y: np.ndarray,
    *,
    config: LADPConfig,
    seed: int,
    noise_seed: int | None = None,
    public: Public | None = None,
    planned_n: int | None = None,
) -> LADPEngine:
    """An engine of `kind` on the private (x, y). `public` feeds LADP's allocation (public data
    only: choosing from it is post-processing); DP-SGD has no allocation and ignores it.
    planned_n: the public count q and the steps are planned for (LADPEngine; default len(x))."""
    if kind == "ladp":
        px, py = public if public is not None else (None, None)
        return LADPEngine(
            model,
            x,
            y,
            config=config,
            seed=seed,
            noise_seed=noise_seed,
            public_x=px,
            public_y=py,
            planned_n=planned_n,
        )
    if kind == "dp-sgd":
        return dpsgd_engine(
            model, x, y, config=config, seed=seed, noise_seed=noise_seed, planned_n=planned_n
        )
    raise ValueError(f"unknown DP training engine '{kind}' (known: {', '.join(ENGINES)})")


def engine_details(kind: str, config: LADPConfig) -> dict[str, Any]:
    """What a spend records of the engine it ran: its name (references and `pipeline audit`
    rebuild it from that) and, for DP-SGD, where its per-example gradients came from."""
    if kind == "dp-sgd":
        return {"engine": kind, "per_example": config.per_example}
    return {"engine": kind}


def unbounded(config: LADPConfig, n: int) -> LADPConfig:
    """For a model that is never released (the auditor's reference, trained with the target's
    noise multiplier on another number of examples): the budget set to what its planned steps
    cost, so that it trains for the target's epochs instead of stopping at the target's ε."""
    if config.noise_multiplier is None:
        return config
    q, steps = sampling_plan(config.expected_batch_size, config.epochs, n)
    cost = compute_epsilon(
        noise_multiplier=config.noise_multiplier,
        sample_rate=q,
        steps=steps,
        delta=config.delta,
        accountant=config.accountant,
    )
    return replace(config, epsilon=max(config.epsilon, cost * (1 + 1e-9)))
