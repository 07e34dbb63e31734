"""Reference recipes on DP targets: `evaluate.reference_recipe` "train" (Adam, cheap) against
"target" (the target's own DP engine, settings and noise multiplier), attacking the same target.

For each ε and seed (PRIVCOMP_BENCH_SEEDS, default "0,1"), `pipeline run train-ladp` (default
settings otherwise) trains the target once in runs/bench-references-eps<ε>-seed<s>; then each
recipe trains its 8 references from scratch (local process pool, 2 workers) and attacks that one
target, so the recipes differ in nothing but the references. Reported per recipe: AUC and TPR at
1% and 0.1% FPR of LiRA (online), LiRA offline and RMIA (the reference-based attacks) and the
strongest of all nine by AUC, and the seconds of training the references plus the attack suite.
"""

from __future__ import annotations

import io
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from rich.console import Console

TITLE = "Reference recipes on DP targets: references trained like the target vs with Adam"
EPSILONS = (8.0, 3.0)
RECIPES = ("train", "target")
SHOWN = ("lira", "lira-offline", "rmia")


def _target(epsilon: float, seed: int) -> Any:
    """The trained target's run context (train-ladp only; its ledger on the context)."""
    from pipelines.config import load_config
    from pipelines.ledger import replay_run
    from pipelines.progress import Reporter
    from pipelines.runner import build_context, run_pipeline

    overrides = [f"train-ladp.epsilon={epsilon}", f"run.seed={seed}", 'run.evaluate="none"']
    config = load_config(None, overrides)
    run_dir = Path(f"runs/bench-references-eps{epsilon:g}-seed{seed}")
    quiet = Reporter(Console(file=io.StringIO()))
    run_pipeline(["train-ladp"], config=config, run_dir=run_dir, reporter=quiet)
    ctx = build_context(config, run_dir, quiet)
    ctx.history = ["train-ladp"]
    ctx.ledger = replay_run(run_dir, ctx.history)
    return ctx


def _attack(ctx: Any, recipe: str) -> dict[str, Any]:
    from pipelines.evaluation import measure
    from pipelines.measurements import MeasurementStore

    target = ctx.run_dir / "01-train-ladp"
    with tempfile.TemporaryDirectory(prefix="privcomp-bench-refs-") as scratch:
        ctx.config = ctx.config.with_values("evaluate", reference_recipe=recipe)
        ctx.measurements = MeasurementStore()  # each recipe attacks afresh
        ctx.run_dir, home = Path(scratch), ctx.run_dir  # references trained from scratch here
        try:
            start = time.perf_counter()
            attacks = list(ctx.config.evaluate.attacks)
            measured = measure(ctx, "model", target, attacks=attacks).to_json()
            seconds = time.perf_counter() - start
        finally:
            ctx.run_dir = home
    return {"attacks": measured["attacks"], "seconds": seconds}


def run() -> str:
    seeds = [int(s) for s in os.environ.get("PRIVCOMP_BENCH_SEEDS", "0,1").split(",")]
    results: dict[tuple[float, int, str], dict[str, Any]] = {}
    for epsilon in EPSILONS:
        for seed in seeds:
            ctx = _target(epsilon, seed)
            for recipe in RECIPES:
                results[(epsilon, seed, recipe)] = _attack(ctx, recipe)
    return "\n\n".join([_table(results, seeds), _notes(results, seeds)])


def _cell(m: dict[str, Any]) -> str:
    return f"{m['auc']:.3f} · {m['tpr_at_1pct_fpr']:.3f} · {m['tpr_at_0_1pct_fpr']:.3f}"


def _table(results: dict[tuple[float, int, str], dict[str, Any]], seeds: list[int]) -> str:
    lines = [
        "Per cell: AUC · TPR at 1% FPR · TPR at 0.1% FPR (500 members, 500 non-members; at "
        "0.1% FPR that is the TPR at zero false positives). The strongest attack is the one with "
        "the highest AUC of all nine.",
        "",
        "| ε | seed | recipe | " + " | ".join(SHOWN) + " | strongest (AUC) | seconds |",
        "|---:|---:|---|" + "---:|" * (len(SHOWN) + 2),
    ]
    for (epsilon, seed, recipe), r in results.items():
        attacks = r["attacks"]
        best = max(attacks, key=lambda a: attacks[a]["auc"])
        cells = " | ".join(_cell(attacks[a]) for a in SHOWN)
        lines.append(
            f"| {epsilon:g} | {seed} | {recipe} | {cells} | {best} {attacks[best]['auc']:.3f} | "
            f"{r['seconds']:.0f} |"
        )
    return "\n".join(lines)


def _notes(results: dict[tuple[float, int, str], dict[str, Any]], seeds: list[int]) -> str:
    lines = []
    for epsilon in EPSILONS:
        for attack in SHOWN:
            gain = [
                results[(epsilon, s, "target")]["attacks"][attack]["auc"]
                - results[(epsilon, s, "train")]["attacks"][attack]["auc"]
                for s in seeds
            ]
            lines.append(
                f"- ε {epsilon:g}, {attack}: AUC target − train = "
                + ", ".join(f"{g:+.3f}" for g in gain)
                + f" (seeds {', '.join(map(str, seeds))}; mean {statistics.mean(gain):+.3f})"
            )
    seconds = {
        recipe: statistics.median(r["seconds"] for k, r in results.items() if k[2] == recipe)
        for recipe in RECIPES
    }
    lines.append(
        "- Median seconds (8 references + the attack suite, 2 workers): "
        + ", ".join(f"{k} {v:.0f} s" for k, v in seconds.items())
    )
    return "\n".join(lines)
