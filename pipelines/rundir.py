"""The run directory (DESIGN §7): atomic JSON writes, file hashes, the manifest of stage records,
and the log of DP releases (releases.json)."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipelines.stage import Spend

RELEASES = "releases.json"


def write_atomic(path: Path, text: str) -> None:
    """Write a temp file in the same folder, then rename: a killed run never leaves half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: Path, data: Any) -> None:
    write_atomic(path, json.dumps(data, indent=2, default=_jsonable) + "\n")


def read_json(path: Path) -> Any:
    return json.loads(path.read_text())


def _jsonable(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def sha256_of(path: Path) -> str:
    """Hash of a file, or of every file under a folder (names included), in a stable order."""
    digest = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        if path.is_dir():
            digest.update(str(file.relative_to(path)).encode())
        with file.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def stage_dir_name(position: int, stage: str) -> str:
    return f"{position:02d}-{stage}"


# ---- the log of DP releases ------------------------------------------------------------------


@dataclass(frozen=True)
class Release:
    """One completed run of a DP stage: the members were released through `spend`. Appended to
    releases.json and never removed, so that a stage run again after its outputs were lost or
    replaced composes every earlier release (the old files may be anywhere by now)."""

    position: int
    stage: str
    spend: Spend
    outputs: dict[str, str]  # artifact name -> hash of what this release wrote

    def to_json(self) -> dict[str, Any]:
        spend = self.spend
        return {
            "position": self.position,
            "stage": self.stage,
            "outputs": self.outputs,
            "spend": {
                "kind": spend.kind,
                "epsilon": spend.epsilon,
                "delta": spend.delta,
                "details": spend.details,
            },
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Release:
        return cls(
            int(data["position"]), str(data["stage"]), Spend(**data["spend"]), data["outputs"]
        )


def read_releases(run_dir: Path, position: int, stage: str) -> list[Release]:
    """Every logged release of the stage at this position of the run dir, oldest first."""
    path = run_dir / RELEASES
    if not path.exists():
        return []
    found = [Release.from_json(r) for r in read_json(path)["releases"]]
    return [r for r in found if r.position == position and r.stage == stage]


def append_release(run_dir: Path, release: Release) -> None:
    path = run_dir / RELEASES
    logged = read_json(path)["releases"] if path.exists() else []
    write_json(path, {"releases": [*logged, release.to_json()]})


def earlier_releases(
    run_dir: Path, position: int, stage: str, record: dict[str, Any]
) -> list[Release]:
    """The stage's releases other than the one whose outputs the record holds now."""
    return [r for r in read_releases(run_dir, position, stage) if r.outputs != record["outputs"]]
