"""The stages, one module each: importing this package registers them (pipelines.stage.STAGES),
in the order `pipeline stages` lists them."""

from __future__ import annotations

# isort: off
from pipelines.stages import training
from pipelines.stages import federated
from pipelines.stages import prune, export, quantize
from pipelines.stages import distill, evaluate

# isort: on
from pipelines.stage import STAGES

__all__ = [
    "STAGES",
    "distill",
    "evaluate",
    "export",
    "federated",
    "prune",
    "quantize",
    "training",
]
