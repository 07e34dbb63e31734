"""Attack power on the default run, stage by stage, and what the reference models cost.

Runs (or resumes) the default `pipeline run train-ladp prune quantize evaluate` in
runs/bench-attacks, and the same pipeline with the non-private `train` stage in
runs/bench-attacks-train (a leaky baseline next to the DP target); tabulates every attack's AUC and
TPR at low FPR per stage from the stages' metrics.json; times the attack suite on each stage's
artifact with the references cached; then trains the default reference set again with 1 and with
2 worker processes. A run that fails part-way is reported with the stages it completed.
PRIVCOMP_BENCH_SET holds extra `section.key=value` settings (space-separated) for both runs.
"""

from __future__ import annotations

import io
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from rich.console import Console

TITLE = "Membership-inference attacks: power per stage and reference-model cost"
RUNS = {
    "runs/bench-attacks": ["train-ladp", "prune", "quantize", "evaluate"],
    "runs/bench-attacks-train": ["train", "prune", "quantize", "evaluate"],
}


def _context(run_dir: Path, config: dict[str, Any]) -> Any:
    from pipelines.progress import Reporter
    from pipelines.runner import build_context

    return build_context(config, run_dir, Reporter(Console(file=io.StringIO())))


def _completed(run_dir: Path, stages: list[str]) -> list[dict[str, Any]]:
    """Per completed stage: name, artifact (kind, path) and the measured attacks."""
    from pipelines.rundir import read_json, stage_dir_name

    out: list[dict[str, Any]] = []
    artifact: tuple[str, str] | None = None
    for position, name in enumerate(stages, start=1):
        folder = run_dir / stage_dir_name(position, name)
        if not (folder / "metrics.json").is_file() or not (folder / "result.json").is_file():
            break
        outputs = read_json(folder / "result.json")["outputs"]
        if outputs:
            artifact = list(outputs.items())[-1]
        metrics = read_json(folder / "metrics.json")
        out.append({"name": name, "artifact": artifact, "metrics": metrics})
    return out


def _power_table(rows: list[dict[str, Any]]) -> str:
    names = list(rows[0]["metrics"]["attacks"])
    lines = [
        "| attack | " + " | ".join(r["name"] for r in rows) + " |",
        "|---|" + "---:|" * len(rows),
    ]
    for name in names:
        cells = []
        for r in rows:
            m = r["metrics"]["attacks"][name]
            lo, hi = m["auc_ci"]
            cells.append(
                f"{m['auc']:.3f} [{lo:.3f}, {hi:.3f}] · {m['tpr_at_1pct_fpr']:.3f} · "
                f"{m['tpr_at_0_1pct_fpr']:.3f}"
            )
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    accuracy = " | ".join(f"{r['metrics']['utility']['test_accuracy']:.3f}" for r in rows)
    lines.append(f"| _test accuracy_ | {accuracy} |")
    return "\n".join(lines)


def _attack_seconds(ctx: Any, rows: list[dict[str, Any]], stages: list[str]) -> list[str]:
    """Wall seconds of the attack suite (target queries + every attack + metrics) per artifact."""
    from pipelines.evaluation import measure
    from pipelines.ledger import replay_run
    from pipelines.measurements import MeasurementStore

    lines = []
    for position, row in enumerate(rows, start=1):
        if row["name"] == "evaluate" or row["artifact"] is None:
            continue
        kind, relative = row["artifact"]
        ctx.history = stages[:position]
        ctx.ledger = replay_run(ctx.run_dir, ctx.history)  # references trained like a DP target
        ctx.measurements = MeasurementStore()  # measured again, not read from the run
        start = time.perf_counter()
        measure(ctx, kind, ctx.run_dir / relative, attacks=list(ctx.config.evaluate.attacks))
        lines.append(f"| {row['name']} | `{relative}` | {time.perf_counter() - start:.1f} |")
    return lines


def fresh_references(ctx: Any, executor: Any) -> tuple[float, Any]:
    """Train the run's reference set from scratch through `executor`: (wall seconds, the set)."""
    from attacks.references import train_references
    from pipelines.evaluation import candidate_pool, train_recipe

    candidates = candidate_pool(ctx)
    recipe, _ = train_recipe(ctx)
    with tempfile.TemporaryDirectory(prefix="privcomp-bench-refs-") as work:
        start = time.perf_counter()
        refs = train_references(
            candidates.pool.x,
            candidates.pool.y,
            k=ctx.config.evaluate.shadow_models,
            arch=ctx.model_arch(),
            recipe=recipe,
            seed=ctx.seed,
            directory=Path(work),
            executor=executor,
        )
        return time.perf_counter() - start, refs


def _reference_seconds(ctx: Any, workers: int) -> tuple[float, list[float]]:
    """Train the default reference set from scratch with `workers` processes (wall, per model)."""
    from pipelines.executors import LocalExecutor

    wall, refs = fresh_references(ctx, LocalExecutor(workers))
    return wall, list(refs.seconds)


def _one_run(run_dir: Path, stages: list[str], config: dict[str, Any]) -> tuple[Any, list[str]]:
    from models.errors import UserError
    from pipelines.config import to_toml
    from pipelines.progress import Reporter
    from pipelines.runner import run_pipeline

    saved = run_dir / "config.toml"
    if saved.is_file() and saved.read_text() != to_toml(config):
        shutil.rmtree(run_dir)  # this benchmark's own run of an older configuration
    start = time.perf_counter()
    failure = ""
    try:
        run_pipeline(stages, config=config, run_dir=run_dir, reporter=Reporter())
    except (UserError, ValueError, RuntimeError) as exc:  # attacks' errors too
        failure = f"{type(exc).__name__}: {str(exc).splitlines()[0]}"
    seconds = time.perf_counter() - start
    rows = _completed(run_dir, stages)
    ctx = _context(run_dir, config)
    lines = [
        f"### `pipeline run {' '.join(stages)}`",
        "",
        f"Run directory `{run_dir}`; this invocation took {seconds:.0f} s (stages already on",
        "disk are reused).",
    ]
    if failure:
        done = ", ".join(r["name"] for r in rows) or "none"
        lines += ["", f"**The run failed** ({failure}); completed stages: {done}."]
    if rows:
        lines += ["", _power_table(rows), ""]
        lines += ["Attack suite per artifact, references cached:", ""]
        lines += ["| stage | artifact | seconds |", "|---|---|---:|"]
        lines += _attack_seconds(ctx, rows, stages)
    return ctx, lines


def run() -> str:
    from pipelines.config import load_config

    overrides = os.environ.get("PRIVCOMP_BENCH_SET", "").split()
    config = load_config(None, overrides)
    cfg = config.evaluate
    lines = [
        f"Default configuration (mnist5k, cnn, seed {config.run.seed})"
        + (f" with `{' '.join(overrides)}`" if overrides else "")
        + f". {cfg.shadow_models} reference models (recipe `{cfg.reference_recipe}`: "
        f"trained like the target for the DP run, Adam for {cfg.shadow_epochs} epochs for "
        "the non-private one), each on a random half of the candidate pool "
        f"({cfg.samples} members + {cfg.samples} non-members + the population); mirror "
        f"{'on' if cfg.mirror else 'off'}.",
        "",
        "Per cell: AUC [bootstrap 95% interval] · TPR at 1% FPR · TPR at 0.1% FPR. With 500",
        "non-members, TPR at 0.1% FPR is the TPR at zero false positives.",
    ]
    contexts = []
    for run_dir, stages in RUNS.items():
        ctx, section = _one_run(Path(run_dir), stages, config)
        contexts.append(ctx)
        lines += ["", *section]
    load_before = os.getloadavg()[0]
    costs = {w: _reference_seconds(contexts[0], w) for w in (1, 2)}
    load_after = os.getloadavg()[0]
    lines += [
        "",
        "### Reference models",
        "",
        f"{cfg.shadow_models} models trained from scratch on the default pool, local process",
        "pool, one torch thread per worker; wall seconds include starting the workers and each",
        "model's outputs on the pool:",
        "",
        "| workers | wall seconds | mean seconds per model (training only) |",
        "|---:|---:|---:|",
    ]
    for workers, (wall, per_model) in costs.items():
        lines.append(f"| {workers} | {wall:.1f} | {sum(per_model) / len(per_model):.1f} |")
    cores = os.cpu_count() or 1
    busy = max(load_before, load_after) > cores
    lines += [
        "",
        f"Speed-up with 2 workers: {costs[1][0] / costs[2][0]:.2f}x. Load average of the machine",
        f"(1 min) before / after these two trainings: {load_before:.1f} / {load_after:.1f} on "
        f"{cores} cores"
        + (
            ": above the core count, other work competed for the CPUs, and the seconds (the "
            "2-worker ones most) overstate the cost."
            if busy
            else "."
        ),
    ]
    return "\n".join(lines) + "\n"
