"""Targeted checks of the engine that ships, for the faults `pipeline audit` cannot see.

The audit's canary is in every batch and its statistic is a displacement, so three faults of the
mechanism escape it: (i) shuffled fixed-size batches instead of Poisson sampling, (ii) dividing
the noisy sum by the realised batch size instead of the expected one, (v) an allocation measured
on the members instead of the public split. Each check below runs the real engine phase (the
stage's own engine builder for (v)), passes on the shipped code, and fails on a mutation of it.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from rich.console import Console

import pipelines.stages.training
import privacy.ladp
from models.zoo import seeded_model
from pipelines.config import load_config
from pipelines.context import RunContext
from pipelines.data import load_dataset, make_splits
from pipelines.progress import Reporter
from pipelines.stages.training import TrainLADP
from privacy.config import LADPConfig
from privacy.groups import group_noise_stds
from privacy.ladp import LADPEngine
from tests.conftest import TINY

N, Q = 500, 0.2


def engine_on_digits(**overrides: Any) -> LADPEngine:
    data = load_dataset("digits")
    x, y = data.x[:N], data.y[:N]
    config = LADPConfig(
        **{
            "epsilon": 8.0,
            "delta": 1e-4,
            "epochs": 50,
            "expected_batch_size": int(N * Q),
            "lr": 0.1,
            "momentum": 0.0,
            "allocation": "uniform",  # no public data here
            **overrides,
        }
    )
    model = seeded_model("mlp", seed=0, in_shape=data.in_shape, num_classes=10, hidden=8)
    return LADPEngine(model, x, y, config=config, seed=0, noise_seed=0)


# ---- (i) Poisson sampling ----------------------------------------------------------------------


def poisson_sampling_ok(engine: LADPEngine, draws: int = 3000) -> bool:
    """Batch sizes vary as Binomial(n, q), each example joins at rate q, independently of the
    previous batch (shuffling gives a fixed size and, within an epoch, no repeats)."""
    n, q = engine.n, engine.q
    joined = np.zeros((draws, n), dtype=bool)
    for t in range(draws):
        joined[t, engine.sample_batch().numpy()] = True
    sizes = joined.sum(axis=1)
    variance_ratio = sizes.var(ddof=1) / (n * q * (1 - q))
    rate = joined.mean()
    both = (joined[1:] & joined[:-1]).mean()  # joined two steps in a row: q² if independent
    return bool(
        0.85 < variance_ratio < 1.15 and abs(rate - q) < 0.01 and abs(both - q**2) < 0.2 * q**2
    )


def test_sampling_is_poisson() -> None:
    assert poisson_sampling_ok(engine_on_digits())


def test_shuffled_batches_fail_the_sampling_check(monkeypatch: pytest.MonkeyPatch) -> None:
    state: dict[str, Any] = {"order": np.array([], dtype=int)}

    def shuffled(rng: np.random.Generator, n: int, rate: float) -> np.ndarray:
        size = round(rate * n)
        if len(state["order"]) < size:
            state["order"] = rng.permutation(n)
        batch, state["order"] = state["order"][:size], state["order"][size:]
        return np.asarray(batch)

    monkeypatch.setattr(privacy.ladp, "poisson_sample", shuffled)
    assert not poisson_sampling_ok(engine_on_digits())


# ---- (ii) division by the expected batch size ------------------------------------------------


def division_statistics(engine: LADPEngine, steps: int = 30) -> tuple[float, float]:
    """From the released gradient g and the clipped sum S of each step, the residual
    r = g · q n − S must be the noise alone: N(0, (σ_l C_l)²), independent of S.

    Returns (E[(r / σ_l C_l)²], the mean over steps of z², z the standardised regression
    coefficient of r on S). Dividing by the realised batch B instead makes r contain
    S · (q n / B − 1): z is then far from N(0, 1)."""
    seen: dict[str, Any] = {}
    clipped = engine.clipped_sums

    def spy_sums(*args: Any) -> dict[str, torch.Tensor]:
        seen["sums"] = clipped(*args)
        return seen["sums"]

    step = engine.optimizer.step

    def spy_step(*args: Any, **kwargs: Any) -> Any:
        seen["grads"] = {n: p.grad.clone() for n, p in engine.model.named_parameters()}
        return step(*args, **kwargs)

    engine.clipped_sums = spy_sums
    engine.optimizer.step = spy_step  # type: ignore[method-assign]
    squares, z_squared = [], []
    for _ in range(steps):
        engine.step()
        groups = engine.current_groups
        stds = group_noise_stds(engine.sigma, [g.weight for g in groups])
        cross = energy = 0.0
        for g, s in zip(groups, stds, strict=True):
            tau = s * g.clip_norm
            for n in g.param_names:
                residual = seen["grads"][n] * (engine.q * engine.n) - seen["sums"][n]
                squares.append((residual / tau).pow(2).flatten())
                cross += float((residual * seen["sums"][n]).sum()) / tau**2
                energy += float(seen["sums"][n].pow(2).sum()) / tau**2
        z_squared.append(cross**2 / energy)
    return float(torch.cat(squares).mean()), float(np.mean(z_squared))


def division_ok(engine: LADPEngine) -> bool:
    variance_ratio, mean_z2 = division_statistics(engine)
    return 0.9 < variance_ratio < 1.1 and mean_z2 < 2.0


def test_noisy_sums_are_divided_by_the_expected_batch_size() -> None:
    assert division_ok(engine_on_digits(noise_multiplier=0.3, epsilon=1e3))


def test_dividing_by_the_realised_batch_fails_the_check(monkeypatch: pytest.MonkeyPatch) -> None:
    sample = LADPEngine.sample_batch
    realised: dict[int, int] = {}

    def sample_and_count(self: LADPEngine) -> torch.Tensor:
        batch = sample(self)
        realised[id(self)] = len(batch)
        return batch

    monkeypatch.setattr(LADPEngine, "sample_batch", sample_and_count)
    monkeypatch.setattr(
        LADPEngine, "expected_batch_size", property(lambda self: float(realised[id(self)]))
    )
    assert not division_ok(engine_on_digits(noise_multiplier=0.3, epsilon=1e3))


# ---- (v) the allocation reads the public split only ------------------------------------------


def stage_context(members_from: str) -> RunContext:
    """A run context whose members are the split `members_from` (the public split unchanged)."""
    config = load_config(None, [*TINY, 'train-ladp.allocation="matched"'])
    data = load_dataset("digits")
    splits = make_splits(len(data.y), seed=0, fractions=config.data.fractions())
    # Both member sets are disjoint from the public split, so only the members differ.
    splits = replace(splits, indices={**splits.indices, "members": splits[members_from]})
    return RunContext(Path("unused"), config, data, splits, Reporter(Console(file=io.StringIO())))


def allocations(ctx: RunContext) -> list[list[tuple[str, float, float]]]:
    """The stage's allocation at its first three measurements, for the same model weights (the
    model itself may depend on the members through the DP steps: that is post-processing)."""
    stage = TrainLADP(ctx.config.train_ladp)
    model = seeded_model("cnn", seed=0, in_shape=ctx.dataset.in_shape, num_classes=10, width=8)
    engine = stage._engine(ctx, model, stage.space().config(), noise_seed=0)
    found = []
    for measurement in range(3):
        engine.steps_taken = measurement * engine.config.fisher_every
        found.append([(g.name, g.clip_norm, g.weight) for g in engine.groups_for_step()])
    return found


def allocation_ignores_the_members() -> bool:
    return allocations(stage_context("members")) == allocations(stage_context("population"))


def test_the_stages_allocation_ignores_the_members() -> None:
    assert allocation_ignores_the_members()


def test_an_allocation_measured_on_the_members_fails_the_check(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    build: Callable[..., LADPEngine] = pipelines.stages.training.build_engine

    def on_members(kind: str, model: Any, x: Any, y: Any, **kwargs: Any) -> LADPEngine:
        return build(kind, model, x, y, **{**kwargs, "public": (x, y)})

    monkeypatch.setattr(pipelines.stages.training, "build_engine", on_members)
    assert not allocation_ignores_the_members()
