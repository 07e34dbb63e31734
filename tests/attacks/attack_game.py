"""A tiny privacy game on sklearn digits: a target that memorised its few members, and references
trained on random halves of the candidate pool (members + non-members + population).

A uniquely named module, not conftest.py: tests/conftest.py exists too, so "from conftest import"
would be ambiguous.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from attacks.references import ReferenceSet, TrainRecipe, train_references
from attacks.suite import Pool
from models.training import fit
from models.zoo import seeded_model
from pipelines.data import load_dataset

N_MEMBERS = 100  # few, so that 100 epochs without regularisation memorise them
N_POPULATION = 100
EPOCHS = 100
ARCH: dict[str, Any] = {
    "name": "mlp",
    "kwargs": {"in_shape": [1, 8, 8], "num_classes": 10, "hidden": 64},
}
RECIPE = TrainRecipe(epochs=EPOCHS, batch_size=32)


@dataclass(frozen=True, eq=False)
class Game:
    target: nn.Module
    references: ReferenceSet
    pool: Pool
    references_dir: Path  # the saved reference models

    def inputs(self) -> dict[str, Any]:
        """Keyword arguments of run_attacks / score_attacks, all but the target."""
        return {"pool": self.pool, "references": self.references}


@contextmanager
def one_thread() -> Iterator[None]:
    # Tiny models train faster on one thread, and the test machine is shared.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def build(seed: int) -> nn.Module:
    kwargs = {**ARCH["kwargs"], "in_shape": tuple(ARCH["kwargs"]["in_shape"])}
    return seeded_model(ARCH["name"], seed=seed, **kwargs)


def make_game(directory: Path, *, seed: int = 0, k: int = 8, disjoint: bool = False) -> Game:
    """disjoint=True: the target trains on other data than the whole pool (a null game)."""
    data = load_dataset("digits")
    order = np.random.default_rng(seed).permutation(len(data.y))
    n, p = N_MEMBERS, N_POPULATION
    chosen = order[: 2 * n + p]
    # Pool positions: the chosen examples in data set order, so roles are interleaved.
    pool_idx = np.sort(chosen)
    role = {int(i): r for r, part in enumerate(np.split(chosen, [n, 2 * n])) for i in part}
    roles = np.array([role[int(i)] for i in pool_idx])
    train_idx = order[2 * n + p : 3 * n + p] if disjoint else order[:n]
    with one_thread():
        target = fit(
            build(seed - 1), data.x[train_idx], data.y[train_idx], epochs=EPOCHS, batch_size=32
        )
        references = train_references(
            data.x[pool_idx],
            data.y[pool_idx],
            k=k,
            arch=ARCH,
            recipe=RECIPE,
            seed=seed + 1,
            directory=directory,
        )
    pool = Pool(
        x=data.x[pool_idx],
        y=data.y[pool_idx],
        members=np.flatnonzero(roles == 0),
        nonmembers=np.flatnonzero(roles == 1),
        population=np.flatnonzero(roles == 2),
    )
    return Game(target, references, pool, directory)
