"""The stage contract (DESIGN §4): a stage declares what it needs and provides, its typed config
section and what it will spend; `run` does the work.

Artifacts are named: "model" (a folder with model.safetensors + arch.json) and "onnx_model" (one
.onnx file). A requirement written "model|onnx_model" is met by either.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

from pipelines.settings.base import Section
from pipelines.spend import POST_PROCESSING, Spend

if TYPE_CHECKING:
    from pipelines.context import RunContext

__all__ = ["POST_PROCESSING", "STAGES", "Spend", "Stage", "StageResult", "register_stage"]


@dataclass(frozen=True)
class StageResult:
    outputs: dict[str, Path]  # artifact name -> path inside the stage folder
    spend: Spend
    metrics: dict[str, Any] = field(default_factory=dict)


C = TypeVar("C", bound=Section)


class Stage(ABC, Generic[C]):
    """Subclasses set the class attributes and `Config` (their section's dataclass, the only
    source of their defaults); the constructor only stores the config.

    The runner calls, in order: `check(ctx)` for every stage before anything is written;
    `planned_spend(ctx)` (against the ledger so far, ctx.ledger) to check the budget and admit
    the stage before it runs; `run(ctx)`, which finds the admitted plan in ctx.planned and
    returns the spend it really made: the planned mechanism, never more.
    """

    name: ClassVar[str]
    requires: ClassVar[tuple[str, ...]]
    provides: ClassVar[tuple[str, ...]]
    privacy_cost: ClassVar[str]  # one line for `pipeline stages`
    summary: ClassVar[str]
    Config: ClassVar[type[Section]]

    def __init__(self, config: C) -> None:
        self.config = config

    @property
    def conceals_duration(self) -> bool:
        """True when the stage's wall time would reveal what its DP mechanism keeps secret (a
        private search's number of repetitions): the runner then records no seconds."""
        return False

    @property
    def audit_attacks(self) -> tuple[str, ...]:
        """Attacks the latest artifact must have been measured with after this stage (the
        evaluate stage's audit): the runner measures what is missing, on a resumed run too."""
        return ()

    def check(self, ctx: RunContext) -> None:  # noqa: B027 - optional hook
        """Validate settings against the data before any stage runs (raise PrivcompError)."""

    @abstractmethod
    def planned_spend(self, ctx: RunContext) -> Spend:
        """What the stage will spend, fixed before it reads any private data, given the ledger
        so far (ctx.ledger)."""

    @abstractmethod
    def run(self, ctx: RunContext) -> StageResult: ...


# The registry `pipeline run NAME...` looks names up in; importing pipelines.stages fills it.
STAGES: dict[str, type[Stage]] = {}

S = TypeVar("S", bound=type[Stage])


def register_stage(cls: S) -> S:
    if cls.name in STAGES:
        raise ValueError(f"stage '{cls.name}' is already registered")
    STAGES[cls.name] = cls
    return cls
