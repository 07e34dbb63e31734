"""LADP's parameter groups (DESIGN §5.1): which parameters are clipped together, at which clip
norm, and with which share w_l of the noise budget (σ_l = σ_eff / sqrt(w_l), Σ w_l = 1).

A group schedule picks the groups of each step from the current model and public data only
(privacy.sensitivity builds one from Fisher sensitivities); `check_groups` holds every choice to
the conditions the proof in privacy.ladp needs.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from torch import nn

# How a schedule chooses the groups' clip norms and weights (privacy.sensitivity.allocate).
ALLOCATIONS = ("uniform", "utility", "protect", "matched")
WEIGHT_SUM_TOL = 1e-6


@dataclass(frozen=True)
class LayerGroup:
    """Parameters clipped together to clip_norm; weight is the group's share of 1/σ_eff²."""

    name: str
    param_names: tuple[str, ...]
    clip_norm: float
    weight: float


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
