"""The measurement store: what the auditor measured on each artifact, keyed by its hash.

The runner fills it (accuracy and size always; attacks when run.evaluate asks or the evaluate
stage runs); the summary table, the ONNX metadata (only with export.attack_metadata) and the
report read it. A stage's metrics.json holds the measurement of its artifact, so a resumed run
reuses it instead of attacking the same file again.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any


@dataclass(frozen=True)
class Measurement:
    artifact: str  # artifact hash (pipelines.artifacts.artifact_hash)
    utility: dict[str, Any]
    size: dict[str, Any]
    attacks: dict[str, dict[str, Any]] = field(default_factory=dict)  # attack -> metrics
    roc: dict[str, dict[str, Any]] = field(default_factory=dict)  # attack -> {"fpr", "tpr"}

    def merged(self, other: Measurement) -> Measurement:
        """This measurement with the attacks of another of the same artifact added."""
        if other.artifact != self.artifact:
            raise ValueError("cannot merge measurements of different artifacts")
        return replace(
            self, attacks={**self.attacks, **other.attacks}, roc={**self.roc, **other.roc}
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "artifact": self.artifact,
            "utility": self.utility,
            "size": self.size,
            "attacks": self.attacks,
            "roc": self.roc,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Measurement | None:
        """The measurement in a metrics.json, None when it holds none (or an older layout)."""
        try:
            return cls(
                artifact=str(data["artifact"]),
                utility=dict(data["utility"]),
                size=dict(data["size"]),
                attacks=dict(data.get("attacks", {})),
                roc=dict(data.get("roc", {})),
            )
        except (KeyError, TypeError, ValueError):
            return None


class MeasurementStore:
    def __init__(self) -> None:
        self._by_artifact: dict[str, Measurement] = {}

    def get(self, artifact: str) -> Measurement | None:
        return self._by_artifact.get(artifact)

    def put(self, measurement: Measurement) -> Measurement:
        """Keep a measurement (merged with what is known of the same artifact); return it."""
        known = self._by_artifact.get(measurement.artifact)
        merged = known.merged(measurement) if known else measurement
        self._by_artifact[measurement.artifact] = merged
        return merged
