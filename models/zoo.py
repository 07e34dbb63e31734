"""Registry of architectures. Every model maps float32 images (N, C, H, W) to logits (N, classes).

Normalisation layers are GroupNorm, never BatchNorm: DP-SGD needs per-example gradients, which
batch statistics would mix across examples.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

ModelFactory = Callable[..., nn.Module]
MODELS: dict[str, ModelFactory] = {}
BASE_MODELS: list[str] = []  # what run.model and a distilled student may be


def register_model(name: str, *, base: bool = True) -> Callable[[ModelFactory], ModelFactory]:
    """base=False: a composite a defense releases (built from a base model's record), which a
    run cannot ask for as its architecture."""

    def decorator(factory: ModelFactory) -> ModelFactory:
        MODELS[name] = factory
        if base:
            BASE_MODELS.append(name)
        return factory

    return decorator


def build_model(name: str, **kwargs: Any) -> nn.Module:
    """Build a registered model; kwargs are those recorded in arch.json."""
    if name not in MODELS:
        known = ", ".join(sorted(MODELS))
        raise KeyError(f"unknown model '{name}' (known: {known})")
    return MODELS[name](**kwargs)


def classifier_of(model: nn.Module) -> nn.Linear:
    """The final Linear layer: pruning keeps its outputs (the classes)."""
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError("model has no Linear classifier layer")
    return linears[-1]


def output_layers(model: nn.Module) -> list[nn.Module]:
    """The layers whose outputs are classes, which pruning must keep whole: the classifier, or
    what a composite model (stacked, masked) lists in its own `output_layers()`."""
    listed = getattr(model, "output_layers", None)
    if callable(listed):
        return list(listed())
    return [classifier_of(model)]


def trainable_part(model: nn.Module) -> nn.Module:
    """What a fine-tune trains: the model, or the part a composite names in its `trainable()`
    (a masked model's base: its mask is an output transform, not something to fit)."""
    part = getattr(model, "trainable", None)
    return part() if callable(part) else model


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _dropout(rate: float) -> list[nn.Module]:
    """A Dropout layer, or none at rate 0: models without dropout keep the layers (and the saved
    module names) they always had. Eval mode disables it, so inference and export are unchanged."""
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {rate}")
    return [nn.Dropout(rate)] if rate > 0 else []


def _groups(channels: int, preferred: int) -> int:
    """Largest group count <= preferred that divides channels (pruned widths stay valid)."""
    for g in range(min(preferred, channels), 0, -1):
        if channels % g == 0:
            return g
    return 1


@register_model("cnn")
def small_cnn(
    *,
    in_shape: tuple[int, int, int],
    num_classes: int,
    width: int = 32,
    hidden: int = 128,
    groups: int = 4,
    dropout: float = 0.0,
) -> nn.Module:
    """Two conv blocks + two dense layers: the workhorse for DP training on a laptop. dropout > 0
    drops the flattened features and the hidden layer's activations."""
    c, h, w = in_shape
    flat = 2 * width * (h // 4) * (w // 4)
    return nn.Sequential(
        nn.Conv2d(c, width, 3, padding=1),
        nn.GroupNorm(_groups(width, groups), width),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(width, 2 * width, 3, padding=1),
        nn.GroupNorm(_groups(2 * width, groups), 2 * width),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        *_dropout(dropout),
        nn.Linear(flat, hidden),
        nn.ReLU(),
        *_dropout(dropout),
        nn.Linear(hidden, num_classes),
    )


@register_model("mlp")
def mlp(
    *,
    in_shape: tuple[int, int, int],
    num_classes: int,
    hidden: int = 256,
    depth: int = 2,
    dropout: float = 0.0,
) -> nn.Module:
    """depth hidden layers; dropout > 0 drops each hidden layer's activations (not the pixels)."""
    layers: list[nn.Module] = [nn.Flatten()]
    width = in_shape[0] * in_shape[1] * in_shape[2]
    for _ in range(depth):
        layers += [nn.Linear(width, hidden), nn.ReLU(), *_dropout(dropout)]
        width = hidden
    layers.append(nn.Linear(width, num_classes))
    return nn.Sequential(*layers)


@register_model("resnet18")
def resnet18(
    *, in_shape: tuple[int, int, int], num_classes: int, groups: int = 8, dropout: float = 0.0
) -> nn.Module:
    """torchvision's ResNet-18 with GroupNorm and a 3x3 stride-1 stem for 28x28 inputs; dropout > 0
    drops the pooled features before the classifier (fc becomes Sequential(Dropout, Linear))."""
    from torchvision.models import resnet18 as tv_resnet18

    def norm(channels: int) -> nn.Module:
        return nn.GroupNorm(_groups(channels, groups), channels)

    model = tv_resnet18(weights=None, num_classes=num_classes, norm_layer=norm)
    model.conv1 = nn.Conv2d(in_shape[0], 64, kernel_size=3, stride=1, padding=1, bias=False)
    model.maxpool = nn.Identity()
    if dropout_layers := _dropout(dropout):
        model.fc = nn.Sequential(*dropout_layers, model.fc)
    return model


def seeded_model(name: str, *, seed: int, **kwargs: Any) -> nn.Module:
    """Build a model whose initial weights depend only on the seed."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build_model(name, **kwargs)
