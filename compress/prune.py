"""Structural pruning with Torch-Pruning: whole channels and neurons go, so tensors really shrink.

Magnitude importance looks only at the weights, so pruning a DP-trained model is post-processing
and costs no privacy budget. The classifier keeps its outputs (the classes); GroupNorm layers keep
their group count because Torch-Pruning removes the same positions from every group.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import torch
import torch_pruning as tp
from torch import nn

from models.zoo import classifier_of, count_params

# The criterion is an object handed to the pruner (Torch-Pruning's style), built fresh per call.
IMPORTANCES: dict[str, Callable[[], object]] = {
    "l1": partial(tp.importance.MagnitudeImportance, p=1),
    "l2": partial(tp.importance.MagnitudeImportance, p=2),
}


def register_importance(name: str, factory: Callable[[], object]) -> None:
    IMPORTANCES[name] = factory


@dataclass(frozen=True)
class PruneResult:
    params_before: int
    params_after: int

    @property
    def factor(self) -> float:
        """How many times fewer parameters the pruned model has."""
        return self.params_before / max(self.params_after, 1)


def _importance(name: str) -> object:
    if name not in IMPORTANCES:
        known = ", ".join(sorted(IMPORTANCES))
        raise ValueError(f"unknown importance '{name}' (known: {known})")
    return IMPORTANCES[name]()


def prune_model(
    model: nn.Module,
    example_input: torch.Tensor,
    *,
    ratio: float = 0.5,
    importance: str = "l2",
) -> PruneResult:
    """Prune `ratio` of the channels of every prunable layer group, in place.

    Parameters are replaced by smaller ones: build any optimizer after pruning, not before.
    """
    if not 0.0 < ratio < 1.0:
        raise ValueError(f"pruning ratio must be in (0, 1), got {ratio}")
    criterion = _importance(importance)
    was_training = model.training
    before = count_params(model)
    # Torch-Pruning traces the autograd graph of one forward pass, so gradients must be enabled.
    with torch.enable_grad():
        pruner = tp.pruner.MetaPruner(
            model,
            example_input,
            importance=criterion,
            pruning_ratio=ratio,
            ignored_layers=[classifier_of(model)],
        )
        pruner.step()
    model.train(was_training)
    return PruneResult(params_before=before, params_after=count_params(model))
