"""The reference recipes of a DP-trained or a defended target: each reference trained by the
target's engine, or with the target's defense.

attacks.references trains references through whatever recipe it is given and knows nothing of
privacy; these are the recipes the evaluation gives it (`evaluate.reference_recipe` "target"),
built from privacy.engines and privacy.defenses, so that LiRA and RMIA compare like with like.
Jobs carry them into worker processes: module-level, picklable dataclasses.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from torch import nn

from privacy.config import LADPConfig
from privacy.defenses import Defense, TrainingPlan
from privacy.engines import build_engine, unbounded


@dataclass(frozen=True, eq=False)
class DPRecipe:
    """Train like the target: `engine` (privacy.engines name, "ladp" or "dp-sgd") with the
    released settings `dp` (LADPConfig fields, the target's noise multiplier included); `public`
    feeds LADP's per-layer allocation as the target's stage used it."""

    engine: str
    dp: dict[str, Any]
    public: tuple[np.ndarray, np.ndarray] | None = None

    def train(self, model: nn.Module, x: np.ndarray, y: np.ndarray, *, seed: int) -> nn.Module:
        config = unbounded(LADPConfig.from_settings(self.dp), len(x))
        # The auditor's model, never released: its noise may come from the recorded seed.
        engine = build_engine(
            self.engine,
            model,
            x,
            y,
            config=config,
            seed=seed,
            noise_seed=seed,
            public=self.public,
        )
        return engine.run().model

    def released_arch(self, arch: dict[str, Any]) -> dict[str, Any]:
        return arch

    def to_dict(self) -> dict[str, Any]:
        # The public split is fixed by the run's seed and data set, which the cache records.
        return {"engine": self.engine, "dp": self.dp}


@dataclass(frozen=True, eq=False)
class DefenseRecipe:
    """Train like a defended target: the same defense and settings over the same [train] plan,
    on the reference's half of the pool, with the run's public split where the defense reads
    one. `arch` is the base architecture the defense builds from."""

    defense: Defense
    plan: TrainingPlan
    arch: dict[str, Any]
    public: tuple[np.ndarray, np.ndarray]

    def train(self, model: nn.Module, x: np.ndarray, y: np.ndarray, *, seed: int) -> nn.Module:
        # The defense builds its own modules (a stacked model has three) from arch and seed.
        return self.defense.train(self.arch, (x, y), public=self.public, plan=self.plan, seed=seed)

    def released_arch(self, arch: dict[str, Any]) -> dict[str, Any]:
        return self.defense.released_arch(arch)

    def to_dict(self) -> dict[str, Any]:
        return {
            "defense": self.defense.name,
            "settings": self.defense.settings(),
            "plan": asdict(self.plan),
        }
