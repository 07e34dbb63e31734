"""Baseline: plain DP-SGD (flat clipping of the whole gradient), accounted exactly like LADP.

Per-example gradients come from Opacus by default (GradSampleModule's hooks: an implementation
independent of LADP's fast path), or, with config.per_example = "privcomp", from privcomp's own
clipping on the flat group: LADP's fast path (privacy.fastpath, every module of the group at
once) where it supports the model, else the vmap reference path. The mechanism is the same; the
privcomp source also runs on torchvision's resnet18, whose in-place residual adds Opacus's
hooks refuse. Everything else is privcomp's own engine (privacy.ladp.LADPEngine): Poisson
sampling at q = B/n, Gaussian noise σ·C, division by the expected batch size, the same planned
steps, the same calibration of σ with the same accountant, and the same secure randomness
(Opacus's secure_mode needs torchcsprng, which has no build for the pinned torch). So
`train-ladp` and `train-dpsgd` differ only in how they clip, and compare at equal ε.

DP-SGD is LADP with a single group holding every parameter at weight 1 (σ_l = σ_eff).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import replace

import numpy as np
import torch
import torch.nn.functional as F
from opacus import GradSampleModule
from torch import Tensor, nn

from privacy.clipping import ClippedSumFn, examples_per_chunk
from privacy.config import PER_EXAMPLE, LADPConfig
from privacy.fastpath import clip_factor
from privacy.groups import LayerGroup
from privacy.ladp import LADPEngine, default_clipped_sums


def flat_group(model: nn.Module, *, clip_norm: float) -> LayerGroup:
    """Every trainable parameter in one group: flat clipping at clip_norm, weight 1."""
    names = tuple(n for n, p in model.named_parameters() if p.requires_grad)
    if not names:
        raise ValueError("model has no trainable parameters")
    return LayerGroup(name="<all>", param_names=names, clip_norm=clip_norm, weight=1.0)


def opacus_clipped_sums(
    model: nn.Module, x: Tensor, y: Tensor, groups: Sequence[LayerGroup]
) -> dict[str, Tensor]:
    """Σ_i c_i g_i with c_i = min(1, C / ||g_i||) over the whole gradient of example i, from
    Opacus's per-sample gradients, in chunks so that memory stays bounded."""
    if len(groups) != 1:
        raise ValueError("DP-SGD clips the whole gradient: expected exactly one group")
    (group,) = groups
    params = dict(model.named_parameters())
    chosen = [params[n] for n in group.param_names]
    sums = {n: torch.zeros_like(params[n]) for n in group.param_names}
    if len(x) == 0:
        return sums
    chunk = examples_per_chunk(model)
    wrapped = GradSampleModule(model, loss_reduction="sum")
    try:
        with warnings.catch_warnings():
            # Opacus's hooks fire on module outputs when the input needs no grad: expected here.
            warnings.filterwarnings("ignore", message="Full backward hook is firing")
            for start in range(0, len(x), chunk):
                xb, yb = x[start : start + chunk], y[start : start + chunk]
                F.cross_entropy(wrapped(xb), yb, reduction="sum").backward()
                grads = [getattr(p, "grad_sample", None) for p in chosen]
                if any(g is None for g in grads):
                    raise ValueError("Opacus gave no per-sample gradient for some parameter")
                per_param = [
                    torch.linalg.vector_norm(g.flatten(1), dim=1) for g in grads if g is not None
                ]
                norms = torch.linalg.vector_norm(torch.stack(per_param), dim=0)
                factors = clip_factor(norms, group.clip_norm)
                for name, g in zip(group.param_names, grads, strict=True):
                    sums[name] += torch.tensordot(factors, g, dims=1)
                for p in chosen:
                    setattr(p, "grad_sample", None)  # noqa: B010 - Opacus's dynamic attribute
                    p.grad = None
    finally:
        wrapped.remove_hooks()  # leave the model as it was: no hooks, no grad_sample
    return sums


def dpsgd_engine(
    model: nn.Module,
    x: np.ndarray,
    y: np.ndarray,
    *,
    config: LADPConfig,
    seed: int,
    noise_seed: int | None = None,
    planned_n: int | None = None,
) -> LADPEngine:
    """The DP-SGD baseline as an LADPEngine: one flat group; per-example gradients from
    config.per_example ("opacus": Opacus's per-sample gradients; "privcomp": LADP's own
    clipping, the fast path where supported). planned_n: as LADPEngine's."""
    flat = replace(config, allocation="uniform")  # one fixed group: no per-layer allocation
    return LADPEngine(
        model,
        x,
        y,
        config=flat,
        seed=seed,
        noise_seed=noise_seed,
        groups=[flat_group(model, clip_norm=config.clip_norm)],
        clipped_sums=per_example_source(config),
        mechanism="dp-sgd",
        planned_n=planned_n,
    )


def per_example_source(config: LADPConfig) -> ClippedSumFn:
    """The clipped sums of config.per_example (privacy.config.PER_EXAMPLE)."""
    if config.per_example == "opacus":
        return opacus_clipped_sums
    if config.per_example == "privcomp":
        return default_clipped_sums(config)
    known = ", ".join(PER_EXAMPLE)
    raise ValueError(f"unknown per_example '{config.per_example}' (known: {known})")
