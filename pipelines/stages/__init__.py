"""Stage registry: `pipeline run NAME...` looks names up here."""

from __future__ import annotations

from pipelines.stage import Stage

STAGES: dict[str, type[Stage]] = {}


def register_stage(cls: type[Stage]) -> type[Stage]:
    STAGES[cls.name] = cls
    return cls


# Importing the modules registers their stages, in the order `pipeline stages` lists them.
from pipelines.stages import training  # noqa: E402, I001  (training first)
from pipelines.stages import compression, distill, evaluate  # noqa: E402

__all__ = ["STAGES", "compression", "distill", "evaluate", "register_stage", "training"]
