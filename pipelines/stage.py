"""The stage contract (DESIGN §4): a stage declares what it needs and provides; `run` does the work.

Artifacts are named: "model" (a folder with model.safetensors + arch.json) and "onnx_model" (one
.onnx file). A requirement written "model|onnx_model" is met by either.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from pipelines.context import RunContext


@dataclass(frozen=True)
class Spend:
    """What a stage did to the privacy of the artifact it produced.

    kind "dp": a DP mechanism on the private data, with its accounted (epsilon, delta).
    kind "none": read private data without DP: the artifact is not private (epsilon None).
    kind "post-processing": no private data touched; the input's guarantee carries over.

    `details` of a "dp" spend feed the ledger's accountant: `noise_multiplier`, `sample_rate`,
    `steps`, `accountant` (one subsampled Gaussian mechanism), `dataset` (the private split read,
    default "members") and `lineage = "continue"` when it extends its input's history (a DP
    fine-tune) instead of starting a new artifact lineage.
    """

    kind: str
    epsilon: float | None = None
    delta: float | None = None
    details: dict[str, Any] = field(default_factory=dict)


POST_PROCESSING = Spend(kind="post-processing")


@dataclass(frozen=True)
class StageResult:
    outputs: dict[str, Path]  # artifact name -> path inside the stage folder
    spend: Spend
    metrics: dict[str, Any] = field(default_factory=dict)


class Stage(ABC):
    name: ClassVar[str]
    requires: ClassVar[tuple[str, ...]]
    provides: ClassVar[tuple[str, ...]]
    uses_private_data: ClassVar[bool]
    privacy_cost: ClassVar[str]  # one line for `pipeline stages`
    summary: ClassVar[str]

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = dict(config)

    @property
    def conceals_duration(self) -> bool:
        """True when the stage's wall time would reveal what its DP mechanism keeps secret (a
        private search's number of repetitions): the runner then records no seconds."""
        return False

    def check(self, ctx: RunContext) -> None:  # noqa: B027 - optional hook
        """Validate settings against the data before any stage runs (raise PrivcompError)."""

    @abstractmethod
    def run(self, ctx: RunContext) -> StageResult: ...
