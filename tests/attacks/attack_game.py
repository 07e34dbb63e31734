"""A tiny privacy game on sklearn digits: a target that memorised 50 members, and 4 shadows.

A uniquely named module, not conftest.py: tests/conftest.py exists too, so "from conftest import"
would be ambiguous.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from attacks.shadow import ShadowSet, train_shadows
from models.training import fit
from models.zoo import seeded_model
from pipelines.data import load_dataset

N_MEMBERS = 50  # tiny, so that 100 epochs without regularisation memorise it
ARCH: dict[str, Any] = {
    "name": "mlp",
    "kwargs": {"in_shape": (1, 8, 8), "num_classes": 10, "hidden": 64},
}


@dataclass(frozen=True, eq=False)
class Game:
    target: nn.Module
    shadows: ShadowSet
    x: np.ndarray
    y: np.ndarray
    members: np.ndarray  # indices into x
    nonmembers: np.ndarray
    population: np.ndarray

    def pair(self, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self.x[idx], self.y[idx]

    def attack_inputs(self) -> dict[str, Any]:
        """Keyword arguments of run_attacks / score_attacks, all but the target."""
        return {
            "members": self.pair(self.members),
            "nonmembers": self.pair(self.nonmembers),
            "shadows": self.shadows,
            "x_pop": self.x[self.population],
            "y_pop": self.y[self.population],
        }


@contextmanager
def one_thread() -> Iterator[None]:
    # Tiny models train faster on one thread, and the test machine is shared.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def build(i: int) -> nn.Module:
    return seeded_model(ARCH["name"], seed=100 + i, **ARCH["kwargs"])


def train(model: nn.Module, x: np.ndarray, y: np.ndarray, seed: int) -> nn.Module:
    return fit(model, x, y, epochs=100, batch_size=32, seed=seed)


def make_game(*, seed: int = 0, k: int = 4) -> Game:
    data = load_dataset("digits")
    order = np.random.default_rng(seed).permutation(len(data.y))
    members, nonmembers = order[:N_MEMBERS], order[N_MEMBERS : 2 * N_MEMBERS]
    # Twice the members: each shadow trains on a half, as many examples as the target saw.
    population = order[2 * N_MEMBERS : 4 * N_MEMBERS]
    with one_thread():
        target = train(build(-1), data.x[members], data.y[members], seed)
        shadows = train_shadows(
            data.x[population], data.y[population], k=k, build=build, train=train, seed=seed + 1
        )
    return Game(target, shadows, data.x, data.y, members, nonmembers, population)
