"""summary.json (DESIGN §7): the run, and one row per artifact with its guarantee and what the
auditor measured on it (a stage that produces no artifact, e.g. `evaluate`, adds its attacks to
the row of the artifact it audited)."""

from __future__ import annotations

from typing import Any

from pipelines.context import RunContext
from pipelines.findings import findings, headline
from privacy.randomness import noise_description

SUMMARY_FIELDS = ("utility", "size", "attacks")


def run_info(ctx: RunContext, version: str) -> dict[str, Any]:
    run, mode = ctx.config.run, ctx.noise_mode
    return {
        "dataset": run.dataset,
        "model": run.model,
        "seed": run.seed,
        "version": version,
        "noise": mode,
        "noise_note": noise_description(mode),
    }


def artifact_row(ctx: RunContext, stage: str, seconds: float | None, digest: str) -> dict[str, Any]:
    """The row of the artifact the current stage produced (measurements are filled at the end)."""
    assert ctx.latest is not None and ctx.guarantee is not None
    defense = ctx.defense()
    return {
        "name": stage,
        "artifact": str(ctx.artifacts[ctx.latest].relative_to(ctx.run_dir)),
        "artifact_kind": ctx.latest,
        "artifact_hash": digest,
        "seconds": seconds,
        "privacy": {
            "epsilon": ctx.guarantee.epsilon,
            "delta": ctx.guarantee.delta,
            # A defense is no guarantee (epsilon stays null); it says what the model releases.
            "defense": defense.name if defense is not None else None,
            "release": defense.release if defense is not None else "scores",
        },
    }


def with_measurements(ctx: RunContext, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each row with its artifact's measurement as the store holds it at the end of the run,
    and its strongest attack at 1% FPR with the interval corrected for picking it."""
    filled = []
    for row in rows:
        measured = ctx.measurements.get(row["artifact_hash"])
        assert measured is not None, "every artifact is measured after the stage that made it"
        data = measured.to_json()
        privacy = row["privacy"]
        found = findings(data["attacks"], data["roc"], privacy["epsilon"], privacy["delta"])
        strongest = headline(found)
        filled.append({**row, **{k: data[k] for k in SUMMARY_FIELDS}, "strongest": strongest})
    return filled
