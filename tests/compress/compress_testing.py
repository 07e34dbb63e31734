"""Helpers shared by the compress tests (a unique module name: tests/ folders have no __init__)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from models.zoo import seeded_model

MNIST_SHAPE = (1, 28, 28)
DIGITS_SHAPE = (1, 8, 8)


def make_model(name: str, in_shape: tuple[int, int, int]) -> tuple[nn.Module, dict[str, Any]]:
    """A seeded registry model in eval mode and the arch record save_model wants."""
    kwargs = {"in_shape": in_shape, "num_classes": 10}
    return seeded_model(name, seed=0, **kwargs).eval(), {"name": name, "kwargs": kwargs}


def random_images(n: int, in_shape: tuple[int, ...], *, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, *in_shape)).astype(np.float32)


@torch.no_grad()
def torch_logits(model: nn.Module, x: np.ndarray) -> np.ndarray:
    return model.eval()(torch.from_numpy(x)).numpy()
