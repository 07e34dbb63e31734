"""The runner: plan the stages, prepare the run directory, run (or reuse) each stage, measure.

Data flow is one way: config -> stages -> run dir -> summary. A stage whose record in the
manifest matches (same position, same inputs, outputs still on disk with the same hashes) is
reused, so a killed or repeated run resumes instead of starting over.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

from rich.markup import escape

from models.zoo import MODELS
from pipelines.artifacts import artifact_files, artifact_hash
from pipelines.config import Config, to_toml
from pipelines.context import RunContext
from pipelines.data import Splits, load_dataset, make_splits
from pipelines.errors import PrivcompError
from pipelines.evaluation import check_evaluate_config, measure_artifact
from pipelines.ledger import Budget, Ledger, check_budget, plan_spend
from pipelines.progress import Reporter
from pipelines.releases import ReleaseLog
from pipelines.rundir import locked, read_json, stage_dir_name, write_atomic, write_json
from pipelines.stage import Spend, Stage, StageResult
from pipelines.stages import STAGES
from privacy.randomness import noise_description

EVALUATE_MODES = ("each", "last", "none")
VERSION = "0.1.0"


def plan(names: list[str], config: Config) -> list[Stage]:
    """Resolve stage names and check that every requirement is provided by an earlier stage."""
    if not names:
        raise PrivcompError("no stages given (see `pipeline stages`)")
    available = {"splits"}
    stages = []
    for name in names:
        if name not in STAGES:
            raise PrivcompError(f"unknown stage '{name}' (known: {', '.join(sorted(STAGES))})")
        cls = STAGES[name]
        for requirement in cls.requires:
            options = requirement.split("|")
            if not available.intersection(options):
                providers = sorted(s for s, c in STAGES.items() if set(c.provides) & set(options))
                raise PrivcompError(
                    f"stage '{name}' needs {' or '.join(repr(o) for o in options)}, which no "
                    f"earlier stage provides (put one of {', '.join(providers)} before it)"
                )
        available.update(cls.provides)
        stages.append(cls(config.get(name, {})))
    if config["run"]["evaluate"] not in EVALUATE_MODES:
        raise PrivcompError(f"run.evaluate must be one of {', '.join(EVALUATE_MODES)}")
    if config["run"]["model"] not in MODELS:
        known = ", ".join(sorted(MODELS))
        raise PrivcompError(f"unknown model '{config['run']['model']}' (known: {known})")
    check_evaluate_config(config["evaluate"])  # not first found after a stage has trained
    return stages


def build_context(config: Config, run_dir: Path, reporter: Reporter) -> RunContext:
    """The run's data set and seeded split from [run] and [data]."""
    run_cfg = config["run"]
    root = Path(run_cfg["data_root"]) if run_cfg["data_root"] else None
    dataset = load_dataset(run_cfg["dataset"], root=root)
    splits = make_splits(len(dataset.y), seed=int(run_cfg["seed"]), fractions=config["data"])
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
    reporter = reporter or Reporter()
    stages = plan(names, config)
    ctx = build_context(config, run_dir, reporter)
    for stage in stages:
        stage.check(ctx)  # every setting is checked before anything is written
    check_budget(stages, ctx)  # a run that would pass [budget] is refused before it starts
    with locked(run_dir):
        return _run_locked(stages, ctx, rerun_dp=rerun_dp)


def _run_locked(stages: list[Stage], ctx: RunContext, *, rerun_dp: bool) -> dict[str, Any]:
    run_dir, config, reporter = ctx.run_dir, ctx.config, ctx.reporter
    _prepare_run_dir(run_dir, config, ctx.splits)
    previous = _previous_records(run_dir)
    reporter.info(f"run directory: {escape(str(run_dir))}")
    ledger = Ledger(Budget.from_config(config), warn=reporter.info)
    ctx.ledger = ledger
    log = ReleaseLog(run_dir)
    pipeline = {position: stage.name for position, stage in enumerate(stages, start=1)}
    for release in log.outside(pipeline):  # another pipeline's releases in this run dir
        ledger.record_elsewhere(stage_dir_name(release.position, release.stage), release.spend)
    records: list[dict[str, Any]] = []
    entries: list[dict[str, Any]] = []
    for position, stage in enumerate(stages, start=1):
        reporter.info(f"[bold][{position}/{len(stages)}] {stage.name}[/bold]")
        ctx.stage_dir = run_dir / stage_dir_name(position, stage.name)
        record, result = _run_or_reuse(ctx, stage, previous.get(position), rerun_dp=rerun_dp)
        records.append(record)
        earlier = [r.spend for r in log.earlier(position, stage.name, record["outputs"])]
        _advance(ctx, stage, result, ledger, earlier)
        write_json(run_dir / "manifest.json", {"stages": records})
        write_json(run_dir / "ledger.json", ledger.to_dict())
        measured = _measure(ctx, position == len(stages) or stage.name == "evaluate")
        write_json(ctx.stage_dir / "metrics.json", {"stage": result.metrics, **measured})
        entries.append(_summary_entry(ctx, stage, record, measured))
    summary = {"run": _run_info(ctx), "stages": entries, "ledger": ledger.to_dict()}
    write_json(run_dir / "summary.json", summary)
    return summary


def _prepare_run_dir(run_dir: Path, config: Config, splits: Splits) -> None:
    """Refuse to mix configurations in one run dir: what is there is never overwritten."""
    run_dir.mkdir(parents=True, exist_ok=True)
    config_file, splits_file = run_dir / "config.toml", run_dir / "splits.json"
    text = to_toml(config)
    if config_file.exists() and config_file.read_text() != text:
        raise PrivcompError(
            f"{run_dir} holds a run with a different configuration; "
            "pass another --run-dir or remove that folder"
        )
    if splits_file.exists() and Splits.from_json(splits_file.read_text()).to_json() != (
        splits.to_json()
    ):
        raise PrivcompError(f"{splits_file} does not match this configuration's split")
    write_atomic(config_file, text)
    write_atomic(splits_file, splits.to_json())


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
    reused = _reusable(ctx, stage, old, inputs)
    if reused is not None and old is not None:
        ctx.reporter.info("  reusing the outputs of an earlier run (hashes match)")
        return old, reused
    position = int(ctx.stage_dir.name[:2])
    log = ReleaseLog(ctx.run_dir)
    log.settle(position, stage.name, ctx.stage_dir)  # an interrupted attempt that wrote files
    released = log.at(position, stage.name)
    if released and not rerun_dp:
        raise PrivcompError(
            f"stage '{stage.name}' already released a DP model of the members in {ctx.run_dir} "
            "and its outputs are gone or changed; running it again with fresh noise would be a "
            "second release. Restore its files, or pass --rerun-dp to run it again and compose "
            "every earlier release in the ledger"
        )
    assert ctx.ledger is not None
    planned = plan_spend(stage, ctx, ctx.ledger)
    if planned is not None:  # the budget pays for every release, the lost ones too
        ctx.ledger.admit(stage.name, planned, earlier=[r.spend for r in released])
    if released:
        ctx.reporter.info(
            f"  [bold]re-running a DP stage:[/bold] {len(released)} earlier release(s) of the "
            "members are composed into its ε"
        )
    if ctx.stage_dir.exists():
        shutil.rmtree(ctx.stage_dir)  # an incomplete or outdated attempt of this same run
    ctx.stage_dir.mkdir(parents=True)
    if planned is not None and planned.kind == "dp":
        log.start(position, stage.name, planned)  # logged before the members are read
    start = time.perf_counter()
    result = stage.run(ctx)
    seconds = round(time.perf_counter() - start, 3)
    outputs = {k: artifact_hash(k, p) for k, p in result.outputs.items()}
    record: dict[str, Any] = {
        "position": position,
        "name": stage.name,
        "status": "done",
        "seconds": None if stage.conceals_duration else seconds,
        "inputs": inputs,
        "outputs": outputs,
    }
    if result.spend.kind == "dp":
        log.finish(position, stage.name, result.spend, outputs)
    write_json(ctx.stage_dir / "result.json", _result_to_json(ctx, result))
    return record, result


def _reusable(
    ctx: RunContext, stage: Stage, old: dict[str, Any] | None, inputs: dict[str, str]
) -> StageResult | None:
    result_file = ctx.stage_dir / "result.json"
    if not old or old["name"] != stage.name or old["inputs"] != inputs or not result_file.exists():
        return None
    result = _result_from_json(ctx, read_json(result_file))
    for name, path in result.outputs.items():
        if not all(f.is_file() for f in artifact_files(name, path)):
            return None
        if artifact_hash(name, path) != old["outputs"].get(name):
            return None
    return result


def _result_to_json(ctx: RunContext, result: StageResult) -> dict[str, Any]:
    return {
        "outputs": {k: str(p.relative_to(ctx.run_dir)) for k, p in result.outputs.items()},
        "spend": {
            "kind": result.spend.kind,
            "epsilon": result.spend.epsilon,
            "delta": result.spend.delta,
            "details": result.spend.details,
        },
        "metrics": result.metrics,
    }


def _result_from_json(ctx: RunContext, data: dict[str, Any]) -> StageResult:
    outputs = {k: ctx.run_dir / p for k, p in data["outputs"].items()}
    return StageResult(outputs, Spend(**data["spend"]), data["metrics"])


def _advance(
    ctx: RunContext, stage: Stage, result: StageResult, ledger: Ledger, earlier: list[Spend]
) -> None:
    ctx.artifacts.update(result.outputs)
    if result.outputs:
        ctx.latest = list(result.outputs)[-1]
    ctx.guarantee = ledger.record(stage.name, result.spend, earlier=earlier)
    ctx.history.append(stage.name)


def _measure(ctx: RunContext, final: bool) -> dict[str, Any]:
    """Accuracy and size always; attacks per run.evaluate. Reuses an earlier measurement of the
    same artifact (same hash) from this run or from the stage's metrics.json on disk."""
    assert ctx.latest is not None
    mode = ctx.config["run"]["evaluate"]
    with_attacks = mode == "each" or (final and mode == "last") or ctx.history[-1] == "evaluate"
    path = ctx.artifacts[ctx.latest]
    key = f"{artifact_hash(ctx.latest, path)}:{'attacked' if with_attacks else 'plain'}"
    on_disk = ctx.stage_dir / "metrics.json"
    if key not in ctx.measurements and on_disk.exists():
        earlier = read_json(on_disk)
        if earlier.get("measurement") == key:
            kept = ("utility", "size", "attacks", "roc")
            ctx.measurements[key] = {k: earlier[k] for k in kept if k in earlier}
    if key not in ctx.measurements:
        ctx.measurements[key] = measure_artifact(ctx, ctx.latest, path, with_attacks=with_attacks)
    return {"measurement": key, **ctx.measurements[key]}


def _summary_entry(
    ctx: RunContext, stage: Stage, record: dict[str, Any], measured: dict[str, Any]
) -> dict[str, Any]:
    assert ctx.latest is not None and ctx.guarantee is not None
    return {
        "name": stage.name,
        "artifact": str(ctx.artifacts[ctx.latest].relative_to(ctx.run_dir)),
        "artifact_kind": ctx.latest,
        "seconds": record["seconds"],
        "privacy": {"epsilon": ctx.guarantee.epsilon, "delta": ctx.guarantee.delta},
        **{k: measured[k] for k in ("utility", "size", "attacks")},
    }


def _run_info(ctx: RunContext) -> dict[str, Any]:
    run, mode = ctx.config["run"], ctx.noise_mode
    return {
        "dataset": run["dataset"],
        "model": run["model"],
        "seed": run["seed"],
        "version": VERSION,
        "noise": mode,
        "noise_note": noise_description(mode),
    }
