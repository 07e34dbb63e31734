"""The log of DP releases of a run directory (releases.json): every time a DP stage ran on the
members, whether its outputs are still there or not.

A release is logged as "started" (with the stage's planned spend) before the stage reads the
members, and marked "done" (with its real spend and the hashes of what it wrote) when it
returns. A "started" entry found on the next run means the attempt was interrupted: if it wrote
any file, it counts as a release ("interrupted"; its planned spend is an upper bound), else
nothing was released and the entry is dropped. Entries are never removed otherwise: a stage run
again after its outputs were lost or replaced composes every earlier release, and releases made
by another pipeline in the same run dir count in the run's total (their files may be anywhere by
now).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from models.errors import UserError
from pipelines.rundir import read_json, stage_dir_name, write_json
from pipelines.spend import Spend

RELEASES = "releases.json"
STARTED, DONE, INTERRUPTED = "started", "done", "interrupted"


@dataclass(frozen=True)
class Release:
    position: int
    stage: str
    spend: Spend
    outputs: dict[str, str]  # artifact name -> hash of what this release wrote
    status: str = DONE
    # Hashes of the artifacts the stage read (None: a log of 0.1.0, taken as this stage's own):
    # a release of the same stage on another input is another pipeline's, not an earlier
    # attempt of this one.
    inputs: dict[str, str] | None = None

    def of(self, position: int, stage: str, inputs: dict[str, str]) -> bool:
        """A release of this stage at this position on these inputs."""
        same = (self.position, self.stage) == (position, stage)
        return same and (self.inputs is None or self.inputs == inputs)

    @property
    def counted(self) -> bool:
        return self.status in (DONE, INTERRUPTED)

    def to_json(self) -> dict[str, Any]:
        return {
            "position": self.position,
            "stage": self.stage,
            "status": self.status,
            "outputs": self.outputs,
            "inputs": self.inputs,
            "spend": self.spend.to_json(),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Release:
        return cls(
            int(data["position"]),
            str(data["stage"]),
            Spend.from_json(data["spend"]),
            dict(data["outputs"]),
            str(data.get("status", DONE)),
            None if data.get("inputs") is None else dict(data["inputs"]),
        )


def _finished(result_file: Path, started: Release) -> Release | None:
    """The release a stage's result.json records (the runner writes it, verified against the
    plan, just before it marks the release done), or None when the attempt did not finish."""
    if not result_file.is_file():
        return None
    try:
        data = read_json(result_file)
    except UserError:
        return None
    record = data.get("record") if isinstance(data, dict) else None
    if not record or (record["position"], record["name"]) != (started.position, started.stage):
        return None
    spend = Spend.from_json(data["spend"])
    return replace(started, spend=spend, outputs=dict(record["outputs"]), status=DONE)


class ReleaseLog:
    def __init__(self, run_dir: Path) -> None:
        self.path = run_dir / RELEASES

    def _read(self) -> list[Release]:
        if not self.path.exists():
            return []
        return [Release.from_json(r) for r in read_json(self.path)["releases"]]

    def _write(self, releases: list[Release]) -> None:
        write_json(self.path, {"releases": [r.to_json() for r in releases]})

    def at(self, position: int, stage: str, inputs: dict[str, str]) -> list[Release]:
        """The counted releases of the stage at this position on these inputs, oldest first."""
        return [r for r in self._read() if r.counted and r.of(position, stage, inputs)]

    def earlier(
        self, position: int, stage: str, inputs: dict[str, str], outputs: dict[str, str]
    ) -> list[Release]:
        """The stage's releases other than the one whose outputs the stage holds now."""
        return [r for r in self.at(position, stage, inputs) if r.outputs != outputs]

    def other_inputs(self, position: int, stage: str, inputs: dict[str, str]) -> list[Release]:
        """Counted releases of this stage at this position on other inputs: another pipeline's
        (counted in the total, in no lineage of this one)."""
        same = [r for r in self._read() if r.counted and (r.position, r.stage) == (position, stage)]
        return [r for r in same if not r.of(position, stage, inputs)]

    def outside(self, pipeline: dict[int, str]) -> list[Release]:
        """Counted releases of stages that this pipeline (position -> stage) does not run."""
        return [r for r in self._read() if r.counted and pipeline.get(r.position) != r.stage]

    def start(self, position: int, stage: str, planned: Spend, inputs: dict[str, str]) -> None:
        started = Release(position, stage, planned, {}, STARTED, inputs)
        self._write([*self._read(), started])

    def finish(
        self,
        position: int,
        stage: str,
        spend: Spend,
        outputs: dict[str, str],
        inputs: dict[str, str],
    ) -> None:
        """Mark the stage's started release done (or log it, if none was started)."""
        releases = self._read()
        done = Release(position, stage, spend, outputs, DONE, inputs)
        for i in reversed(range(len(releases))):
            r = releases[i]
            if r.status == STARTED and (r.position, r.stage) == (position, stage):
                releases[i] = done
                break
        else:
            releases.append(done)
        self._write(releases)

    def _settled(self, run_dir: Path) -> tuple[list[Release], list[Release]]:
        """(the log as it is, the log with every "started" entry resolved): one whose stage
        folder holds files counts as a release ("interrupted"; its planned spend is an upper
        bound), one that wrote nothing released nothing and is dropped."""
        releases = self._read()
        settled = []
        for r in releases:
            if r.status != STARTED:
                settled.append(r)
                continue
            folder = run_dir / stage_dir_name(r.position, r.stage)
            finished = _finished(folder / "result.json", r)
            if finished is not None:  # killed after the stage returned, before the log heard
                settled.append(finished)
            elif folder.is_dir() and any(p.is_file() for p in folder.rglob("*")):
                settled.append(replace(r, status=INTERRUPTED))
        return releases, settled

    def settle(self, run_dir: Path) -> None:
        """Resolve every interrupted attempt before a run, for every position, so that an
        attempt of a stage the next pipeline does not run still counts in the total."""
        releases, settled = self._settled(run_dir)
        if settled != releases:
            self._write(settled)

    def counted(self, run_dir: Path) -> list[Release]:
        """What `settle` would leave counted, without writing (for planning before a run)."""
        return [r for r in self._settled(run_dir)[1] if r.counted]
