"""The runner: plan the stages, prepare the run directory, run (or reuse) each stage, measure.

Data flow is one way: config -> stages -> run dir -> summary. A stage whose record in the
manifest matches (same position, same inputs, outputs still on disk with the same hashes) is
reused, so a killed or repeated run resumes instead of starting over. Every fresh stage is
planned against the live ledger and admitted before it runs (pipelines.planning).
"""

from __future__ import annotations

import shutil
import time
import tomllib
from pathlib import Path
from typing import Any

from rich.markup import escape

from pipelines.artifacts import artifact_files, artifact_hash
from pipelines.config import Config, to_toml
from pipelines.context import RunContext
from pipelines.data import Splits, load_dataset, make_splits
from pipelines.errors import PrivcompError
from pipelines.evaluation import measure_latest, wanted_attacks
from pipelines.executors import check_executor
from pipelines.ledger import Budget, Ledger
from pipelines.planning import check_budget, check_run, plan
from pipelines.progress import Reporter
from pipelines.releases import ReleaseLog
from pipelines.rundir import locked, read_json, stage_dir_name, write_atomic, write_json
from pipelines.spend import Spend
from pipelines.stage import Stage, StageResult
from pipelines.summary import artifact_row, run_info, with_measurements
from pipelines.verify import check_spend_matches_plan

VERSION = "0.1.0"

__all__ = ["VERSION", "build_context", "check_pipeline", "plan", "run_pipeline"]


def build_context(config: Config, run_dir: Path, reporter: Reporter) -> RunContext:
    """The run's data set and seeded split from [run] and [data]."""
    run = config.run
    root = Path(run.data_root) if run.data_root else None
    dataset = load_dataset(run.dataset, root=root)
    splits = make_splits(
        len(dataset.y),
        seed=run.seed,
        fractions=config.data.fractions(),
        canaries=config.data.canaries,
        labels=dataset.y,
        num_classes=dataset.num_classes,
    )
    return RunContext(run_dir, config, dataset, splits, reporter)


def run_pipeline(
    names: list[str],
    *,
    config: Config,
    run_dir: Path,
    reporter: Reporter | None = None,
    rerun_dp: bool = False,
) -> dict[str, Any]:
    """Run (or resume) the stages in run_dir and return the summary.

    rerun_dp: allow a DP stage that already released a model in this run dir to run again
    (its outputs changed or are gone); its earlier releases are then composed in the ledger.
    Without it such a stage is refused: fresh noise on the same members is a second release.
    """
    stages, ctx = check_pipeline(names, config=config, run_dir=run_dir, reporter=reporter)
    try:
        with locked(run_dir):
            return _run_locked(stages, ctx, rerun_dp=rerun_dp)
    finally:
        ctx.close_executor()  # a Ray cluster the run started ends with it


def check_pipeline(
    names: list[str], *, config: Config, run_dir: Path, reporter: Reporter | None = None
) -> tuple[list[Stage], RunContext]:
    """Everything run_pipeline checks before it writes anything (PrivcompError when a check
    fails): the stages and their order, the data and split, the model, every stage's
    settings, the budget. Returns the planned stages and the run's context."""
    reporter = reporter or Reporter()
    stages = plan(names, config)
    ctx = build_context(config, run_dir, reporter)
    check_executor(config.run.executor)  # `ray` without Ray: the install line, before any work
    check_run(stages, ctx)
    for stage in stages:
        stage.check(ctx)  # every setting is checked before anything is written
    check_budget(stages, ctx)  # a run whose plans cannot work is refused before it starts
    return stages, ctx


def _run_locked(stages: list[Stage], ctx: RunContext, *, rerun_dp: bool) -> dict[str, Any]:
    run_dir, reporter = ctx.run_dir, ctx.reporter
    _prepare_run_dir(run_dir, ctx.config, ctx.splits)
    previous = _previous_records(run_dir)  # a damaged manifest is one line, before any output
    reporter.info(f"run directory: {escape(str(run_dir))}")
    ctx.ledger = Ledger(Budget.from_settings(ctx.config.budget), warn=reporter.info)
    log = ReleaseLog(run_dir)
    log.settle(run_dir)  # interrupted attempts of any stage: counted when they wrote files
    pipeline = {position: stage.name for position, stage in enumerate(stages, start=1)}
    for release in log.outside(pipeline):  # another pipeline's releases in this run dir
        ctx.ledger.record_elsewhere(stage_dir_name(release.position, release.stage), release.spend)
    records: list[dict[str, Any]] = []
    rows: list[dict[str, Any]] = []
    attack_plan = _attack_plan(ctx.config, stages)
    for position, stage in enumerate(stages, start=1):
        reporter.info(f"[bold][{position}/{len(stages)}] {stage.name}[/bold]")
        ctx.position, ctx.stage_dir = position, run_dir / stage_dir_name(position, stage.name)
        ctx.attacks_planned = attack_plan[position - 1]
        record, result = _run_or_reuse(ctx, stage, previous.get(position), rerun_dp=rerun_dp)
        records.append(record)
        found = log.earlier(position, stage.name, record["inputs"], record["outputs"])
        earlier = [r.spend for r in found]
        _advance(ctx, stage, result, earlier)
        write_json(run_dir / "manifest.json", {"stages": records})
        write_json(run_dir / "ledger.json", ctx.ledger.to_dict())
        final = position == len(stages)
        measured = measure_latest(ctx, final=final, audit=stage.audit_attacks)
        write_json(ctx.stage_dir / "metrics.json", {"stage": result.metrics, **measured.to_json()})
        if result.outputs:
            rows.append(artifact_row(ctx, stage.name, record["seconds"], measured.artifact))
    summary = {
        "run": run_info(ctx, VERSION),
        "stages": with_measurements(ctx, rows),
        "ledger": ctx.ledger.to_dict(),
    }
    write_json(run_dir / "summary.json", summary)
    return summary


def _attack_plan(config: Config, stages: list[Stage]) -> list[tuple[str, ...]]:
    """Per stage: the attacks measure_latest will ask for on the artifact that stage leaves
    latest, after it and after every following stage that produces nothing (evaluate), so that
    a stage can name them (the privacy card) before they run."""
    final = len(stages) - 1
    wanted = [
        wanted_attacks(config, final=i == final, audit=s.audit_attacks)
        for i, s in enumerate(stages)
    ]
    plan: list[tuple[str, ...]] = []
    for i in range(len(stages)):
        names = list(wanted[i])
        j = i + 1
        while j < len(stages) and not stages[j].provides:
            names += wanted[j]
            j += 1
        plan.append(tuple(dict.fromkeys(names)))
    return plan


def _prepare_run_dir(run_dir: Path, config: Config, splits: Splits) -> None:
    """Refuse to mix configurations in one run dir: what is there is never overwritten. How the
    work is spread (EXECUTION) is no part of what a run is: a run dir started on one executor
    resumes on another, and its config.toml keeps the first."""
    run_dir.mkdir(parents=True, exist_ok=True)
    config_file, splits_file = run_dir / "config.toml", run_dir / "splits.json"
    text = to_toml(config)
    if config_file.exists():
        recorded = config_file.read_text()
        try:
            before = tomllib.loads(recorded)
        except tomllib.TOMLDecodeError as exc:
            raise PrivcompError(
                f"{config_file} is not valid TOML ({exc}); pass another --run-dir or remove "
                "that folder"
            ) from None
        if _without_execution(before) != _without_execution(tomllib.loads(text)):
            raise PrivcompError(
                f"{run_dir} holds a run with a different configuration; "
                "pass another --run-dir or remove that folder"
            )
        text = recorded
    if splits_file.exists():
        try:
            recorded_splits = Splits.from_json(splits_file.read_text()).to_json()
        except (ValueError, KeyError, TypeError) as exc:  # JSONDecodeError is a ValueError
            raise PrivcompError(
                f"{splits_file} is damaged ({exc!r}); pass another --run-dir or remove that folder"
            ) from None
        if recorded_splits != splits.to_json():
            raise PrivcompError(f"{splits_file} does not match this configuration's split")
    write_atomic(config_file, text)
    write_atomic(splits_file, splits.to_json())


# How the work is spread, not what it computes: a run dir resumes under other values of these.
EXECUTION = (
    ("run", "executor"),
    ("run", "workers"),
    ("run", "ray_address"),
    ("train-fl", "workers"),
)


def _without_execution(settings: dict[str, Any]) -> dict[str, Any]:
    for section, key in EXECUTION:
        settings.get(section, {}).pop(key, None)
    return settings


def _previous_records(run_dir: Path) -> dict[int, dict[str, Any]]:
    manifest = run_dir / "manifest.json"
    if not manifest.exists():
        return {}
    return {r["position"]: r for r in read_json(manifest)["stages"]}


def _input_hashes(ctx: RunContext, stage: Stage) -> dict[str, str]:
    hashes = {}
    for requirement in stage.requires:
        for option in requirement.split("|"):
            if option in ctx.artifacts:
                hashes[option] = artifact_hash(option, ctx.artifacts[option])
    return hashes


def _run_or_reuse(
    ctx: RunContext, stage: Stage, old: dict[str, Any] | None, *, rerun_dp: bool
) -> tuple[dict[str, Any], StageResult]:
    inputs = _input_hashes(ctx, stage)
    for other in ReleaseLog(ctx.run_dir).other_inputs(ctx.position, stage.name, inputs):
        # the same stage of another pipeline in this run dir (another input): in the total only
        ctx.ledger.record_elsewhere(stage_dir_name(other.position, other.stage), other.spend)
    reused = _reusable(ctx, stage, old, inputs)
    if reused is not None:
        ctx.reporter.info("  reusing the outputs of an earlier run (hashes match)")
        return reused
    planned, released = _admit(ctx, stage, inputs, rerun_dp=rerun_dp)
    if ctx.stage_dir.exists():
        shutil.rmtree(ctx.stage_dir)  # an incomplete or outdated attempt of this same run
    ctx.stage_dir.mkdir(parents=True)
    log = ReleaseLog(ctx.run_dir)
    if planned.kind == "dp":
        log.start(ctx.position, stage.name, planned, inputs)  # before the members are read
    ctx.planned = planned
    start = time.perf_counter()
    try:
        result = stage.run(ctx)
    finally:
        ctx.planned = None
    seconds = round(time.perf_counter() - start, 3)
    try:
        check_spend_matches_plan(stage.name, planned, result.spend)
    except RuntimeError:
        # A refused result is not released: its files go before anyone can take them, and
        # its "started" entry (a plan it did not keep) with them.
        shutil.rmtree(ctx.stage_dir)
        log.settle(ctx.run_dir)
        raise
    outputs = {k: artifact_hash(k, p) for k, p in result.outputs.items()}
    record: dict[str, Any] = {
        "position": ctx.position,
        "name": stage.name,
        "status": "done",
        "seconds": None if stage.conceals_duration else seconds,
        "inputs": inputs,
        "outputs": outputs,
    }
    # The stage's own record first: a run killed before the log or the manifest hears of it
    # resumes from here (and the release log completes the entry from it).
    write_json(ctx.stage_dir / "result.json", _result_to_json(ctx, result, record))
    if result.spend.kind == "dp":
        log.finish(ctx.position, stage.name, result.spend, outputs, inputs)
    return record, result


def _admit(
    ctx: RunContext, stage: Stage, inputs: dict[str, str], *, rerun_dp: bool
) -> tuple[Spend, list[Spend]]:
    """Plan the stage against the live ledger and admit it, with every earlier release of it
    on these inputs (a lost or replaced one counts: anyone may hold its files)."""
    log = ReleaseLog(ctx.run_dir)
    released = [r.spend for r in log.at(ctx.position, stage.name, inputs)]
    if released and not rerun_dp:
        raise PrivcompError(
            f"stage '{stage.name}' already released a DP model of the members in {ctx.run_dir} "
            "and its outputs are gone or changed; running it again with fresh noise would be a "
            "second release. Restore its files, or pass --rerun-dp to run it again and compose "
            "every earlier release in the ledger"
        )
    planned = stage.planned_spend(ctx)
    ctx.ledger.admit(stage.name, planned, earlier=released)
    if released:
        ctx.reporter.info(
            f"  [bold]re-running a DP stage:[/bold] {len(released)} earlier release(s) of the "
            "members are composed into its ε"
        )
    return planned, released


def _reusable(
    ctx: RunContext, stage: Stage, old: dict[str, Any] | None, inputs: dict[str, str]
) -> tuple[dict[str, Any], StageResult] | None:
    """The stage's record and result when its folder holds a finished attempt of this same stage
    on these inputs whose outputs are still there with their recorded hashes. The record is the
    one in result.json (the manifest's, for run dirs written before it was kept there)."""
    result_file = ctx.stage_dir / "result.json"
    if not result_file.exists():
        return None
    data = read_json(result_file)
    record = data.get("record", old)
    if not record or record["name"] != stage.name or record["inputs"] != inputs:
        return None
    result = _result_from_json(ctx, data)
    for name, path in result.outputs.items():
        if not all(f.is_file() for f in artifact_files(name, path)):
            return None
        if artifact_hash(name, path) != record["outputs"].get(name):
            return None
    return record, result


def _result_to_json(ctx: RunContext, result: StageResult, record: dict[str, Any]) -> dict[str, Any]:
    return {
        "record": record,
        "outputs": {k: str(p.relative_to(ctx.run_dir)) for k, p in result.outputs.items()},
        "spend": result.spend.to_json(),
        "metrics": result.metrics,
    }


def _result_from_json(ctx: RunContext, data: dict[str, Any]) -> StageResult:
    outputs = {k: ctx.run_dir / p for k, p in data["outputs"].items()}
    return StageResult(outputs, Spend.from_json(data["spend"]), data["metrics"])


def _advance(ctx: RunContext, stage: Stage, result: StageResult, earlier: list[Spend]) -> None:
    ctx.artifacts.update(result.outputs)
    if result.outputs:
        ctx.latest = list(result.outputs)[-1]
    ctx.guarantee = ctx.ledger.record(stage.name, result.spend, earlier=earlier)
    ctx.history.append(stage.name)
    ctx.stage_metrics.append(result.metrics)
