"""The reference recipe of a DP-trained target: each reference trained by the target's engine.

attacks.references trains references through whatever recipe it is given and knows nothing of
privacy; this is the recipe the evaluation gives it for a DP target (`evaluate.reference_recipe`
"target"), built from privacy.engines. Jobs carry it into worker processes: a module-level,
picklable dataclass.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from torch import nn

from privacy.config import LADPConfig
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
