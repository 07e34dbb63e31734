"""`pipeline sweep`: the same stages over a grid of settings, one run dir per point.

Each point is the base configuration (TOML + --set) with one value per --grid key applied as
`--set key=value` would be. Every point's configuration is checked before anything trains. The
points run in parallel through the executor (pipelines.study runs its methods the same way), each
in <out>/runs/<point> with its progress in the run dir's sweep.log; a failing point is reported,
not raised, so that the others are kept, and a rerun resumes (finished stages are reused).

The points share their reference models: evaluate.reference_cache is <out>/references for every
point, so points that attack the same pool with the same reference recipe train one set (a DP
recipe with another ε has another noise multiplier, hence another set).

Privacy: every point trains on the members of its split. Releasing, or choosing among, several
points is a composition: sweep.json gives each point's own ε beside the composed ε of every DP
release of its group (the points whose members overlap), by the ledger's own composition.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import os
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipelines.errors import PrivcompError
from pipelines.executors import EXECUTORS, check_executor, close_executor, make_executor
from pipelines.privacy_card import FACTS_FILE, note_selection
from pipelines.progress import Reporter
from pipelines.report import write_sweep_report
from pipelines.rundir import locked, read_json, write_json
from pipelines.selection import PointPrivacy, composed_privacy

SCHEMA_VERSION = 1
SWEEP_FILE = "sweep.json"
LOG_FILE = "sweep.log"
REFERENCES = "references"  # <out>/references: the points' shared reference models
# From a point's run dir <out>/runs/<point>: relative, so that the sweep folder can move.
REFERENCE_CACHE = f"../../{REFERENCES}"
# The sweep's own settings: how the points run, and their shared references.
SWEEP_KEYS = ("run.executor", "run.workers", "run.ray_address", "evaluate.reference_cache")
SWEEP_PRIVACY = (
    "Choosing one of several DP runs on the same members is itself a selection: each point's "
    "epsilon holds for it released alone; composed_epsilon bounds releasing every point of its "
    "group (points whose members overlap) and any choice among them made from their models and "
    "non-member data. A choice made by attack results on the members reads the members again and "
    "is not covered. The sweep folder holds every point's models and the reference models "
    "trained on the pool: keep it with the data owner."
)


# ---- the grid ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Axis:
    """One --grid key and its values as written (each is read as `--set key=value` reads it)."""

    key: str
    values: tuple[str, ...]


@dataclass(frozen=True)
class Point:
    name: str  # the run dir's name: key=value pairs in safe characters, unique in the sweep
    settings: tuple[str, ...]  # the point's --set items


def split_values(text: str) -> list[str]:
    """'1,3' -> ['1', '3']; commas inside [...], {...} or quotes do not split."""
    values: list[str] = []
    current: list[str] = []
    depth, quote = 0, ""
    for char in text:
        if quote:
            quote = "" if char == quote else quote
        elif char in "\"'":
            quote = char
        elif char in "[{":
            depth += 1
        elif char in "]}":
            depth -= 1
        elif char == "," and depth == 0:
            values.append("".join(current).strip())
            current = []
            continue
        current.append(char)
    values.append("".join(current).strip())
    return values


def parse_grid(items: Sequence[str]) -> list[Axis]:
    """The --grid items as axes; PrivcompError for no grid, a malformed item, an empty value,
    a key given twice or a value given twice."""
    from pipelines.config import parse_override

    if not items:
        raise PrivcompError("sweep needs at least one --grid section.key=v1,v2,...")
    axes: list[Axis] = []
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        section, dot, name = key.rpartition(".")
        if not sep or not dot or not section or not name:
            raise PrivcompError(f"--grid expects section.key=v1,v2,..., got '{item}'")
        if key in SWEEP_KEYS:
            raise PrivcompError(f"--grid {key}: the sweep sets it for every point")
        if any(a.key == key for a in axes):
            raise PrivcompError(f"--grid names '{key}' twice; give all its values in one --grid")
        values = split_values(raw)
        if not raw.strip() or any(not v for v in values):
            raise PrivcompError(f"--grid {key}: an empty value in '{raw}' (give v1,v2,...)")
        parsed = [parse_override(f"{key}={v}")[2] for v in values]
        for i, value in enumerate(parsed):
            if any(value == other for other in parsed[:i]):  # 3 and 3.0 are one value
                raise PrivcompError(f"--grid {key} names a value twice: {raw}")
        axes.append(Axis(key, tuple(values)))
    return axes


def _safe(value: str) -> str:
    text = re.sub(r"[^A-Za-z0-9.+-]+", "-", value.replace('"', "").replace("'", "")).strip("-")
    sign = "-" if value.strip().startswith("-") else ""
    return sign + text if text else "empty"


def _digest(text: str, length: int = 8) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def points(axes: Sequence[Axis]) -> list[Point]:
    """The cartesian product of the axes, in order (the first key varies slowest)."""
    out = []
    for combination in itertools.product(*(a.values for a in axes)):
        settings = tuple(f"{a.key}={v}" for a, v in zip(axes, combination, strict=True))
        name = "_".join(f"{a.key}={_safe(v)}" for a, v in zip(axes, combination, strict=True))
        if len(name) > 120:
            name = name[:100]
        out.append(Point(name, settings))
    names = [p.name for p in out]
    # Two values that look alike in safe characters (or a long name cut): told apart by a digest.
    return [
        Point(f"{p.name}-{_digest(' '.join(p.settings))}", p.settings)
        if names.count(p.name) > 1 or len(p.name) == 100
        else p
        for p in out
    ]


# ---- options and jobs ----------------------------------------------------------------------


@dataclass(frozen=True)
class SweepOptions:
    stages: tuple[str, ...]
    grid: tuple[str, ...]  # the --grid items as given
    out: Path | None = None  # default: runs/sweep-<digest of stages, grid and configuration>
    # How the points run: None takes the base configuration's [run] executor, workers and
    # ray_address (the points themselves then run their references serially, in their worker).
    workers: int | None = None
    executor: str | None = None
    config: Path | None = None  # the user's TOML
    overrides: tuple[str, ...] = ()  # the user's --set, under each point's grid values
    ray_address: str | None = None

    def __post_init__(self) -> None:
        if self.workers is not None and self.workers < 1:
            raise PrivcompError(f"--workers must be >= 1, got {self.workers}")
        if self.executor is not None and self.executor not in EXECUTORS:
            known = ", ".join(sorted(EXECUTORS))
            raise PrivcompError(f"unknown executor '{self.executor}' (known: {known})")


@dataclass(frozen=True)
class PointJob:
    """What a worker needs to run one point (picklable)."""

    point: Point
    stages: tuple[str, ...]
    config: str | None
    settings: tuple[str, ...]
    run_dir: str


def point_settings(options: SweepOptions, point: Point) -> tuple[str, ...]:
    """The user's --set, the point's grid values, then the sweep's own: attacks' references
    trained in the point's worker (the executor runs the points) and shared between points."""
    return (
        *options.overrides,
        *point.settings,
        'run.executor="serial"',
        f'evaluate.reference_cache="{REFERENCE_CACHE}"',
    )


def default_out(options: SweepOptions) -> Path:
    from pipelines.config import load_config, to_toml

    base = to_toml(load_config(options.config, list(options.overrides)))
    spec = "\n".join([" ".join(options.stages), *options.grid, base])
    return Path("runs") / f"sweep-{_digest(spec)}"


def run_point(job: PointJob) -> dict[str, Any]:
    """Run one point in its run dir; a failure is reported, not raised, so that one point's
    error does not discard the others' work."""
    from rich.console import Console

    from models.errors import UserError
    from pipelines.config import load_config
    from pipelines.report import write_report
    from pipelines.runner import run_pipeline

    run_dir = Path(job.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with (run_dir / LOG_FILE).open("a") as log:
        reporter = Reporter(Console(file=log, width=100))
        try:
            config = load_config(Path(job.config) if job.config else None, list(job.settings))
            run_pipeline(list(job.stages), config=config, run_dir=run_dir, reporter=reporter)
            write_report([run_dir])  # the point's own report, linked from the sweep's
        except Exception as exc:  # reported in sweep.json; the other points go on
            line = str(exc).splitlines()[0] if str(exc) else ""
            kind = "" if isinstance(exc, UserError) else f"{type(exc).__name__}: "
            reporter.info(f"error: {kind}{line}")
            return {"name": job.point.name, "status": "error", "error": kind + line}
    seconds = round(time.perf_counter() - start, 3)
    return {"name": job.point.name, "status": "ok", "error": None, "seconds": seconds}


# ---- the sweep -----------------------------------------------------------------------------


def _spec(stages: Sequence[str], todo: Sequence[PointJob], digests: Sequence[str]) -> Any:
    """What makes two sweeps the same: the stages, and each point's name and configuration."""
    listed = [{"name": j.point.name, "config": d} for j, d in zip(todo, digests, strict=True)]
    return {"stages": list(stages), "points": listed}


def _check_same_sweep(out: Path, spec: dict[str, Any]) -> None:
    """Refuse an --out that holds a sweep of other points (stages, names or configurations)."""
    path = out / SWEEP_FILE
    if not path.exists():
        return
    found = read_json(path)
    listed = [{"name": p.get("name"), "config": p.get("config")} for p in found.get("points", [])]
    if {"stages": found.get("stages"), "points": listed} != spec:
        raise PrivcompError(
            f"{out} holds another sweep ({' '.join(found.get('stages') or [])}, "
            f"{len(listed)} points; see {path}): rerun it with the same stages, grid and "
            "configuration, or pass another --out"
        )


def _workers(executor: str, workers: int) -> int:
    """Points at once: one serially; a local pool no larger than the cores; Ray's own CPUs."""
    if executor == "serial":
        return 1
    return min(workers, os.cpu_count() or 1) if executor == "local" else workers


def run_sweep(options: SweepOptions, *, reporter: Reporter | None = None) -> dict[str, Any]:
    """Check every point, run them (resuming what is done), write and return sweep.json."""
    from rich.console import Console

    from pipelines.config import load_config, to_toml
    from pipelines.runner import check_pipeline, plan

    reporter = reporter or Reporter()
    axes = parse_grid(options.grid)
    base = load_config(options.config, list(options.overrides))
    if base.evaluate.reference_cache:  # the sweep's own would silently win over it
        raise PrivcompError(
            f"evaluate.reference_cache = '{base.evaluate.reference_cache}': the sweep shares "
            "<out>/references between its points; leave it unset"
        )
    plan(list(options.stages), base)
    out = options.out or default_out(options)
    for axis in axes:  # each value alone over the base: an error names the value
        for value in axis.values:
            try:
                load_config(options.config, [*options.overrides, f"{axis.key}={value}"])
            except PrivcompError as exc:
                raise PrivcompError(f"--grid {axis.key}={value}: {_bare(exc)}") from None
    stages = list(options.stages)
    todo = [
        PointJob(
            point=p,
            stages=tuple(stages),
            config=str(options.config) if options.config else None,
            settings=point_settings(options, p),
            run_dir=str(out / "runs" / p.name),
        )
        for p in points(axes)
    ]
    quiet = Reporter(Console(file=io.StringIO()))
    digests = []
    for job in todo:  # every point's configuration, data, plan and budget, before any trains
        try:
            config = load_config(options.config, list(job.settings))
            check_pipeline(stages, config=config, run_dir=Path(job.run_dir), reporter=quiet)
        except PrivcompError as exc:
            raise PrivcompError(f"sweep point {job.point.name}: {_bare(exc)}") from None
        digests.append(_digest(to_toml(config), 16))
    executor_name = options.executor or base.run.executor
    check_executor(executor_name)
    workers = _workers(executor_name, options.workers or base.run.workers)
    address = base.run.ray_address if options.ray_address is None else options.ray_address
    spec = _spec(stages, todo, digests)
    out.mkdir(parents=True, exist_ok=True)
    with locked(out, option="--out"):
        _check_same_sweep(out, spec)
        header = {
            "schema_version": SCHEMA_VERSION,
            "privacy": SWEEP_PRIVACY,
            "stages": stages,
            "grid": {a.key: list(a.values) for a in axes},
            "overrides": list(options.overrides),
            "config": str(options.config) if options.config else None,
        }
        pending = [
            _point_entry(j, d, {"status": "pending"}) for j, d in zip(todo, digests, strict=True)
        ]
        write_json(out / SWEEP_FILE, {**header, "points": pending})  # a killed sweep is known
        reporter.info(
            f"sweep: {len(todo)} points of {' '.join(stages)} in {out} ({workers} worker(s); "
            f"each point's log: runs/<point>/{LOG_FILE})"
        )
        start = time.perf_counter()
        # A new worker process per point (fresh_workers): each point's peak memory its own.
        executor = make_executor(
            executor_name,
            workers=workers,
            address=address,
            fresh_workers=True,
            report=reporter.info,
        )
        with reporter.task("sweep points run") as progress:
            order = interleaved(todo)
            try:
                done = executor.map(run_point, [todo[i] for i in order], progress=progress)
            finally:
                close_executor(executor)  # a Ray cluster the sweep started
            results = [r for _, r in sorted(zip(order, done, strict=True))]
        privacy = composed_privacy([Path(j.run_dir) for j in todo])
        entries = [
            _point_entry(j, d, r, p)
            for j, d, r, p in zip(todo, digests, results, privacy, strict=True)
        ]
        sweep = {
            **header,
            "seconds": round(time.perf_counter() - start, 3),
            "workers": workers,
            "points": entries,
            "groups": _group_entries(entries, privacy),
        }
        write_json(out / SWEEP_FILE, sweep)
        _note_selection_on_cards(out, entries)
    failed = [e for e in entries if e["status"] != "ok"]
    if len(failed) < len(entries):
        try:
            with reporter.task("writing the sweep's report"):
                write_sweep_report(out)
        except PrivcompError as exc:
            if not failed:
                raise
            # The points' failures are the news; a report the rerun will write is not.
            reporter.info(f"warning: no sweep report: {exc}")
    if failed:
        first = failed[0]
        names = ", ".join(e["name"] for e in failed)
        raise PrivcompError(
            f"{len(failed)} of {len(todo)} sweep points failed ({names}; in {out / SWEEP_FILE}, "
            f"the others are kept, a rerun retries only these): {first['name']}: {first['error']}"
        )
    return sweep


def interleaved(todo: Sequence[PointJob]) -> list[int]:
    """The order the points run in: round-robin over the values of the grid's first key, so
    that the points running at once differ where the references are trained (a first key that
    is the training ε gives each its own reference set; points sharing one would wait for its
    lock in turn)."""
    by_first: dict[str, list[int]] = {}
    for i, job in enumerate(todo):
        first = job.point.settings[0] if job.point.settings else ""
        by_first.setdefault(first, []).append(i)
    queues = list(by_first.values())
    return [q[k] for k in range(max(map(len, queues), default=0)) for q in queues if k < len(q)]


def _bare(exc: PrivcompError) -> str:
    """The error's line without the '--set: ' that load_config puts before a setting's error."""
    text = str(exc)
    return text.removeprefix("--set: ")


def _point_entry(
    job: PointJob, digest: str, result: dict[str, Any], privacy: PointPrivacy | None = None
) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "name": job.point.name,
        "settings": list(job.point.settings),
        "run_dir": str(Path("runs") / job.point.name),
        "config": digest,
        "status": result["status"],
        "error": result.get("error"),
        "seconds": result.get("seconds"),
    }
    if privacy is not None:
        entry.update(
            group=privacy.group,
            epsilon=privacy.epsilon,
            delta=privacy.delta,
            composed_epsilon=privacy.composed_epsilon,
            composed_delta=privacy.composed_delta,
            releases=privacy.releases,
        )
    return entry


def _note_selection_on_cards(out: Path, entries: Sequence[dict[str, Any]]) -> None:
    """Each finished point's privacy cards say that it is one of several points on the same
    members and what the composed ε is (a point picked from the sweep carries that one)."""
    sizes: dict[str | None, int] = {}
    for entry in entries:
        sizes[entry.get("group")] = sizes.get(entry.get("group"), 0) + 1
    for entry in entries:
        if entry["status"] != "ok" or sizes[entry.get("group")] < 2:
            continue
        selection = {
            "sweep": out.name,
            "points": sizes[entry.get("group")],
            "composed_epsilon": entry.get("composed_epsilon"),
            "composed_delta": entry.get("composed_delta"),
        }
        for facts in sorted((out / entry["run_dir"]).glob(f"*/{FACTS_FILE}")):
            note_selection(facts.parent, selection)


def _group_entries(
    entries: Sequence[dict[str, Any]], privacy: Sequence[PointPrivacy]
) -> list[dict[str, Any]]:
    groups: dict[str, dict[str, Any]] = {}
    for entry, p in zip(entries, privacy, strict=True):
        if p.group is None:
            continue
        group = groups.setdefault(
            p.group,
            {
                "group": p.group,
                "points": [],
                "epsilon": p.composed_epsilon,
                "delta": p.composed_delta,
                "accountant": p.accountant,
                "note": p.note,
            },
        )
        group["points"].append(entry["name"])
    return list(groups.values())
