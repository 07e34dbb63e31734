"""Stage registry: `pipeline run NAME...` looks names up here."""

from __future__ import annotations

from pipelines.stage import Stage

STAGES: dict[str, type[Stage]] = {}


def register_stage(cls: type[Stage]) -> type[Stage]:
    STAGES[cls.name] = cls
    return cls


# Importing the modules registers their stages, in the order `pipeline stages` lists them.
# isort: off
from pipelines.stages import training  # noqa: E402
from pipelines.stages import prune, export, quantize  # noqa: E402
from pipelines.stages import distill, evaluate  # noqa: E402
# isort: on

__all__ = [
    "STAGES",
    "distill",
    "evaluate",
    "export",
    "prune",
    "quantize",
    "register_stage",
    "training",
]
