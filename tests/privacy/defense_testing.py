"""Helpers shared by the defense tests (a unique module name: tests/ folders have no __init__)."""

from __future__ import annotations

from functools import cache
from typing import Any

import numpy as np

from privacy.defenses.base import Data, TrainingPlan

DIGITS_SHAPE = (1, 8, 8)
# A small MLP: a few epochs on 600 digits take about a second and reach ~0.9 test accuracy.
ARCH: dict[str, Any] = {
    "name": "mlp",
    "kwargs": {"in_shape": DIGITS_SHAPE, "num_classes": 10, "hidden": 64, "depth": 1},
}
PLAN = TrainingPlan(epochs=8, batch_size=64, lr=3e-3)


@cache
def digits() -> dict[str, Data]:
    """sklearn's digits, standardised: members (600), public (400) and test (the rest)."""
    from sklearn.datasets import load_digits

    data = load_digits()
    x = data.images.astype(np.float32).reshape(-1, *DIGITS_SHAPE)
    x = (x - x.mean()) / x.std()
    y = data.target.astype(np.int64)
    order = np.random.default_rng(0).permutation(len(x))
    cuts = {"members": order[:600], "public": order[600:1000], "test": order[1000:]}
    return {name: (x[idx], y[idx]) for name, idx in cuts.items()}


def held_out_accuracy(model: Any) -> float:
    from models.training import accuracy, predict_logits

    x, y = digits()["test"]
    return accuracy(predict_logits(model, x), y)
