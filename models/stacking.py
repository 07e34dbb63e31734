"""The "stacked" architecture of model stacking (Salem et al. 2019, ML-Leaks): two base models of
one registered architecture and a meta-classifier, a multinomial logistic regression on their
concatenated softmax outputs, released as one module.

Its arch record is {"name": "stacked", "kwargs": {"base", "base_kwargs", "in_shape",
"num_classes"}}; base_kwargs are the base architecture's other kwargs (width, hidden, ...). It
saves, loads, prunes and exports like any registered model: `output_layers()` names the layers
whose outputs are classes (both bases' classifiers and the meta layer), which pruning keeps whole.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from models.zoo import build_model, classifier_of, register_model

STACKED = "stacked"


class BaseScores(nn.Module):
    """Both bases' softmax outputs side by side (N, 2C): the meta-classifier's input. A module of
    its own so that the meta-classifier's training data comes from batched inference on it."""

    def __init__(self, a: nn.Module, b: nn.Module) -> None:
        super().__init__()
        self.a = a
        self.b = b

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([torch.softmax(self.a(x), dim=1), torch.softmax(self.b(x), dim=1)], dim=1)


class StackedModel(nn.Module):
    def __init__(self, a: nn.Module, b: nn.Module, num_classes: int) -> None:
        super().__init__()
        self.bases = BaseScores(a, b)
        # Multinomial logistic regression. Not named "meta": torch.fx GraphModule has a .meta dict,
        # which hides such a submodule from torch.export (the ONNX export fails).
        self.meta_classifier = nn.Linear(2 * num_classes, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.meta_classifier(self.bases(x))

    def output_layers(self) -> list[nn.Module]:
        return [classifier_of(self.bases.a), classifier_of(self.bases.b), self.meta_classifier]


@register_model(STACKED, base=False)
def stacked(
    *,
    base: str,
    in_shape: tuple[int, int, int],
    num_classes: int,
    base_kwargs: dict[str, Any] | None = None,
) -> nn.Module:
    if base == STACKED:
        raise ValueError("a stacked model's base cannot itself be stacked")
    kwargs = {**(base_kwargs or {}), "in_shape": tuple(in_shape), "num_classes": num_classes}
    # Both bases come from the one RNG stream, so seeded_model gives them different inits.
    return StackedModel(build_model(base, **kwargs), build_model(base, **kwargs), num_classes)
