"""One LADP update on a batch that is already sampled: clipped sums (privacy.clipping or
privacy.fastpath), Gaussian noise of std σ_l C_l per group, division by the expected batch size
(never the realised one, which depends on the data), then the optimizer step (post-processing).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor, nn

from privacy.clipping import ClippedSumFn, clipped_grad_sums
from privacy.groups import LayerGroup, group_noise_stds
from privacy.randomness import standard_normal


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


def apply_gradient(
    model: nn.Module, optimizer: torch.optim.Optimizer, grads: dict[str, Tensor]
) -> None:
    """The optimizer step on the released gradient (post-processing)."""
    params = dict(model.named_parameters())
    for n, g in grads.items():
        params[n].grad = g
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


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
