"""Baseline: plain DP-SGD with Opacus (flat clipping), accounted exactly like LADP.

Same sampling rate (q = B/n), same planned steps, same calibration of σ with the same accountant,
so `train-ladp` and `train-dpsgd` can be compared at equal ε.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import numpy as np
import torch
from opacus import GradSampleModule
from opacus.data_loader import DPDataLoader
from opacus.optimizers import DPOptimizer
from torch import nn
from torch.utils.data import TensorDataset

from privacy.accounting import compute_epsilon
from privacy.ladp import LADPConfig, LADPResult, PrivacySpend, plan_noise


def train_dpsgd(
    model: nn.Module,
    x: np.ndarray,
    y: np.ndarray,
    *,
    config: LADPConfig,
    seed: int,
    progress: Callable[[int, int], None] | None = None,
) -> LADPResult:
    """Opacus DP-SGD: Poisson sampling at q, per-example flat clipping at config.clip_norm."""
    # The same q, planned steps and σ as LADP, so the two compare at equal ε.
    q, planned, sigma, steps = plan_noise(config, len(x))
    sampling = torch.Generator().manual_seed(seed)
    noise = torch.Generator().manual_seed(seed + 1)
    data = TensorDataset(torch.as_tensor(x), torch.as_tensor(y))
    loader = DPDataLoader(data, sample_rate=q, generator=sampling)
    wrapped = GradSampleModule(model)
    optimizer = DPOptimizer(
        torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum),
        noise_multiplier=sigma,
        max_grad_norm=config.clip_norm,
        expected_batch_size=config.expected_batch_size,
        generator=noise,
    )
    with warnings.catch_warnings():
        # Opacus's hooks fire on module outputs when the input needs no grad: expected here.
        warnings.filterwarnings("ignore", message="Full backward hook is firing")
        _run_steps(wrapped, optimizer, loader, steps, progress)
    wrapped.remove_hooks()
    epsilon = compute_epsilon(
        noise_multiplier=sigma,
        sample_rate=q,
        steps=steps,
        delta=config.delta,
        accountant=config.accountant,
    )
    spend = PrivacySpend(
        epsilon=epsilon,
        delta=config.delta,
        accountant=config.accountant,
        noise_multiplier=sigma,
        sample_rate=q,
        steps=steps,
        mechanism="dp-sgd (opacus, flat clipping)",
    )
    stopped = steps < planned
    return LADPResult(model.eval(), spend, planned, steps, stopped_at_budget=stopped, seed=seed)


def _run_steps(
    model: nn.Module,
    optimizer: DPOptimizer,
    loader: DPDataLoader,
    steps: int,
    progress: Callable[[int, int], None] | None,
) -> None:
    loss_fn = nn.CrossEntropyLoss()
    model.train()
    batches = iter(loader)
    for step in range(steps):
        try:
            xb, yb = next(batches)
        except StopIteration:
            batches = iter(loader)
            xb, yb = next(batches)
        optimizer.zero_grad(set_to_none=True)
        # Opacus handles an empty Poisson batch: the step then releases noise only.
        loss_fn(model(xb), yb).backward()
        optimizer.step()
        if progress:
            progress(step + 1, steps)
