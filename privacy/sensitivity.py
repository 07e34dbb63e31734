"""LADP sensitivities and allocation (DESIGN §5.2-§5.5), from public data only.

s_l = empirical Fisher information of group l on the public split: the mean over public examples of
the squared per-example gradient norm of the group, divided by its parameter count. The top
`sensitive_fraction` of groups by s_l get clip norm `clip_sensitive`, the others `clip_other`.
Weights w_l = softmax(τ z_l), z = standardised log s (mode "utility": less noise to high-Fisher
groups), or softmax(-τ z_l) (mode "protect": the reverse); σ_l = σ_eff / sqrt(w_l) in
privacy.groups.

Mode "matched" sets the clip norms instead of taking them from clip_sensitive / clip_other: each
group is clipped in proportion to its root-mean-square public gradient norm m_l = sqrt(s_l · d_l),
C_l = clip_norm · m_l / ||m||, with w_l = C_l² / clip_norm². Then σ_l · C_l = σ_eff · clip_norm for
every group: the same noise per coordinate as flat DP-SGD at clip_norm, with each layer clipped on
its own scale (flat clipping lets a layer with large gradients crowd out the others).

Everything here reads the public split and the current model only, so choosing groups from it is
post-processing: it costs no privacy, whatever it chooses.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor, nn

from privacy.clipping import per_example_grads
from privacy.fastpath import per_example_sq_norms, supports_fast_path
from privacy.groups import ALLOCATIONS, GroupSchedule, LayerGroup, layer_groups

MIN_WEIGHT = 1e-12  # softmax underflow guard: every group keeps a finite σ_l
MIN_SENSITIVITY = 1e-30


def group_sizes(model: nn.Module, groups: Sequence[LayerGroup]) -> dict[str, int]:
    params = dict(model.named_parameters())
    return {g.name: sum(params[n].numel() for n in g.param_names) for g in groups}


def fisher_sensitivities(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    groups: Sequence[LayerGroup],
    *,
    batch_size: int = 128,
) -> dict[str, float]:
    """Per group: mean_i ||g_{i,l}||² / (number of parameters of l), on (public) x, y."""
    if len(x) == 0:
        raise ValueError("Fisher sensitivities need at least one public example")
    totals = {g.name: 0.0 for g in groups}
    fast = supports_fast_path(model, groups)
    for start in range(0, len(x), batch_size):
        xb, yb = x[start : start + batch_size], y[start : start + batch_size]
        if fast:
            sq = per_example_sq_norms(model, xb, yb, groups)
        else:
            names = [n for g in groups for n in g.param_names]
            grads = per_example_grads(model, xb, yb, names)
            sq = {
                g.name: torch.stack([grads[n].flatten(1).pow(2).sum(1) for n in g.param_names]).sum(
                    0
                )
                for g in groups
            }
        for g in groups:
            totals[g.name] += float(sq[g.name].sum())
    sizes = group_sizes(model, groups)
    return {g.name: totals[g.name] / len(x) / sizes[g.name] for g in groups}


def allocate(
    groups: Sequence[LayerGroup],
    sensitivities: dict[str, float],
    *,
    mode: str = "utility",
    tau: float = 1.0,
    sensitive_fraction: float = 0.5,
    clip_sensitive: float = 1.0,
    clip_other: float = 5.0,
    clip_norm: float = 1.0,
    sizes: dict[str, int] | None = None,
) -> list[LayerGroup]:
    """Groups with Fisher-derived clip norms and weights (Σ w_l = 1); "matched" needs sizes."""
    if mode not in ALLOCATIONS:
        raise ValueError(f"unknown allocation '{mode}' (known: {', '.join(ALLOCATIONS)})")
    if not 0 <= sensitive_fraction <= 1:
        raise ValueError(f"sensitive_fraction must be in [0, 1], got {sensitive_fraction}")
    if not (math.isfinite(tau) and tau >= 0):
        raise ValueError(f"tau must be a finite number >= 0, got {tau}")
    s = np.array([max(sensitivities[g.name], MIN_SENSITIVITY) for g in groups], dtype=float)
    if mode == "matched":
        return _matched(groups, s, clip_norm, sizes)
    n_sensitive = math.ceil(sensitive_fraction * len(groups))
    order = np.argsort(-s, kind="stable")
    sensitive = set(order[:n_sensitive].tolist())
    if mode == "uniform":
        weights = np.full(len(groups), 1.0 / len(groups))
    else:
        logs = np.log(s)
        spread = logs.std()
        z = (logs - logs.mean()) / spread if spread > 0 else np.zeros_like(logs)
        logits = (tau if mode == "utility" else -tau) * z
        weights = np.exp(logits - logits.max())
        weights = np.maximum(weights / weights.sum(), MIN_WEIGHT)
        weights /= weights.sum()
    return [
        LayerGroup(
            g.name, g.param_names, clip_sensitive if i in sensitive else clip_other, float(w)
        )
        for i, (g, w) in enumerate(zip(groups, weights, strict=True))
    ]


def _matched(
    groups: Sequence[LayerGroup], s: np.ndarray, clip_norm: float, sizes: dict[str, int] | None
) -> list[LayerGroup]:
    if sizes is None:
        raise ValueError("allocation 'matched' needs the groups' parameter counts (sizes)")
    mean_sq = s * np.array([sizes[g.name] for g in groups], dtype=float)
    weights = np.maximum(mean_sq / mean_sq.sum(), MIN_WEIGHT)
    weights /= weights.sum()
    return [
        LayerGroup(g.name, g.param_names, clip_norm * math.sqrt(w), float(w))
        for g, w in zip(groups, weights, strict=True)
    ]


def fisher_schedule(
    public_x: Tensor,
    public_y: Tensor,
    *,
    mode: str,
    tau: float,
    sensitive_fraction: float,
    clip_sensitive: float,
    clip_other: float,
    clip_norm: float,
    every: int,
    samples: int,
    seed: int = 0,
) -> GroupSchedule:
    """GroupSchedule: re-measure sensitivities on `samples` public examples every `every` steps."""
    if every < 1 or samples < 1:
        raise ValueError("fisher_every and fisher_samples must be >= 1")
    gen = torch.Generator().manual_seed(seed)
    cached: list[list[LayerGroup]] = []  # the current groups, replaced (not mutated) on re-measure

    def schedule(model: nn.Module, step: int) -> Sequence[LayerGroup]:
        if not cached or step % every == 0:
            idx = torch.randperm(len(public_x), generator=gen)[:samples].to(public_x.device)
            base = layer_groups(model)
            sens = fisher_sensitivities(model, public_x[idx], public_y[idx], base)
            cached[:] = [
                allocate(
                    base,
                    sens,
                    mode=mode,
                    tau=tau,
                    sensitive_fraction=sensitive_fraction,
                    clip_sensitive=clip_sensitive,
                    clip_other=clip_other,
                    clip_norm=clip_norm,
                    sizes=group_sizes(model, base),
                )
            ]
        return cached[0]

    return schedule
