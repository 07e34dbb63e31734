"""How a full run scales: with the training-set size, with the number of reference models, and
where the time of the default run goes.

1. Training-set size: `pipeline run train-ladp prune quantize evaluate` on mnist5k with 500 to
   3,000 members (PRIVCOMP_BENCH_SCALING_MEMBERS; the other splits fixed: 500 non-members, 1,000
   population, 250 public, 250 test records), attacks after the last stage only, 4 references;
   seconds per stage, of the reference models and of the attacks, and the result.
2. Reference models: one DP target (the default train-ladp on 2,000 members) and 16 references
   trained like it once; LiRA, LiRA offline and RMIA then attack it with the first k of them
   (k = 2, 4, 8, 16: the membership halves are drawn per reference, so the first k are a k-set),
   reporting TPR at 0.1% and 1% FPR and the references' training seconds (the sum over the k;
   with N workers the wall time is about that over N).
3. The default run (`make run`'s command, fresh, in runs/bench-scaling-default): seconds per
   stage, of its reference models and of its attacks.
Seconds are wall-clock on a shared machine: read the shapes, not the digits.
"""

from __future__ import annotations

import io
import json
import os
import time
from pathlib import Path
from typing import Any

from rich.console import Console

TITLE = "Scaling: training-set size, reference models, where the time goes"
STAGES = ["train-ladp", "prune", "quantize", "evaluate"]
POOL = 5000
FIXED = {"nonmembers": 500, "population": 1000, "public": 250, "test": 250}
REFERENCE_COUNTS = (2, 4, 8, 16)
SHOWN = ("lira", "lira-offline", "rmia")
DOCS = Path(__file__).resolve().parent.parent / "docs"


def _quiet() -> Any:
    from pipelines.progress import Reporter

    return Reporter(Console(file=io.StringIO()))


def _timed_run(run_dir: Path, overrides: list[str]) -> dict[str, Any]:
    """Run the pipeline fresh; seconds per stage (manifest), of the references (their timing
    file) and of the rest (attacks and measurement), with the last row's results."""
    import shutil

    from pipelines.config import load_config
    from pipelines.runner import run_pipeline

    if run_dir.exists():
        shutil.rmtree(run_dir)
    start = time.perf_counter()
    summary = run_pipeline(
        STAGES, config=load_config(None, overrides), run_dir=run_dir, reporter=_quiet()
    )
    total = time.perf_counter() - start
    manifest = json.loads((run_dir / "manifest.json").read_text())
    stages = {r["name"]: float(r["seconds"] or 0.0) for r in manifest["stages"]}
    timing = run_dir / "references" / "timing.json"
    references = float(json.loads(timing.read_text())["wall_seconds"]) if timing.is_file() else 0.0
    last = summary["stages"][-1]
    # The evaluate stage's own seconds hold whatever it measured (with run.evaluate = "last",
    # the references too): the attacks are what the run spent beyond the other stages and the
    # references.
    made = sum(v for k, v in stages.items() if k != "evaluate")
    return {
        "stages": stages,
        "references": references,
        "attacks": total - made - references,
        "total": total,
        "accuracy": last["utility"]["test_accuracy"],
        "epsilon": last["privacy"]["epsilon"],
        "strongest": last.get("strongest"),
    }


def _fractions(members: int) -> list[str]:
    sizes = {"members": members, **FIXED}
    rest = POOL - sum(sizes.values())
    if rest < 0:
        raise SystemExit(f"{members} members do not fit mnist5k beside the fixed splits")
    sizes["population"] += rest  # every record has a role
    return [f"data.{k}={v / POOL!r}" for k, v in sizes.items()]


def size_table(sizes: list[int]) -> tuple[str, list[dict[str, Any]]]:
    rows = []
    for members in sizes:
        overrides = [*_fractions(members), 'run.evaluate="last"', "evaluate.shadow_models=4"]
        result = _timed_run(Path(f"runs/bench-scaling-members-{members}"), overrides)
        rows.append({"members": members, **result})
    lines = [
        "| members | train-ladp s | prune s | quantize s | references s | attacks s | total s "
        "| ε | test acc | strongest TPR@1% [corrected 95%] |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        s, best = r["stages"], r["strongest"]
        power = f"{best['tpr']:.3f} [{best['tpr_lower']:.3f}, {best['tpr_upper']:.3f}]"
        lines.append(
            f"| {r['members']:,} | {s['train-ladp']:.0f} | {s['prune']:.1f} | {s['quantize']:.1f} "
            f"| {r['references']:.0f} | {r['attacks']:.0f} | {r['total']:.0f} | "
            f"{r['epsilon']:.2f} | {r['accuracy']:.3f} | {power} |"
        )
    return "\n".join(lines), rows


def reference_table(counts: tuple[int, ...]) -> tuple[str, list[dict[str, Any]]]:
    """The first k of max(counts) references, trained once like the target, against one target."""
    import numpy as np

    import pipelines.evaluation as evaluation
    from attacks.references import ReferenceSet
    from pipelines.config import load_config
    from pipelines.ledger import replay_run
    from pipelines.measurements import MeasurementStore
    from pipelines.runner import build_context, run_pipeline

    most = max(counts)
    config = load_config(None, ['run.evaluate="none"', f"evaluate.shadow_models={most}"])
    run_dir = Path("runs/bench-scaling-references")
    run_pipeline(["train-ladp"], config=config, run_dir=run_dir, reporter=_quiet())
    ctx = build_context(config, run_dir, _quiet())
    ctx.history = ["train-ladp"]
    ctx.ledger = replay_run(run_dir, ctx.history)
    target = run_dir / "01-train-ladp"
    full = evaluation.reference_set(ctx)  # trained once (cached in the run dir)
    timing = json.loads((run_dir / "references" / "timing.json").read_text())
    seconds = [float(s) for s in timing["train_seconds"]]
    original = evaluation.reference_set
    rows = []
    try:
        for k in counts:
            subset = ReferenceSet(
                membership=np.asarray(full.membership[:k]),
                logits=np.asarray(full.logits[:k]),
                augment=full.augment,
                seed=full.seed,
            )
            evaluation.reference_set = lambda ctx, candidates=None, s=subset: s  # type: ignore[assignment]
            ctx.measurements = MeasurementStore()
            start = time.perf_counter()
            measured = evaluation.measure(ctx, "model", target, attacks=list(SHOWN))
            attack_seconds = time.perf_counter() - start
            rows.append(
                {
                    "k": k,
                    "train_seconds": sum(seconds[:k]),
                    "attack_seconds": attack_seconds,
                    "attacks": measured.attacks,
                }
            )
    finally:
        evaluation.reference_set = original  # type: ignore[assignment]
    head = " | ".join(f"{a} TPR@0.1% · @1%" for a in SHOWN)
    lines = [
        f"| references | training s (sum) | attack s | {head} |",
        "|---:|---:|---:|" + "---|" * len(SHOWN),
    ]
    for r in rows:
        cells = " | ".join(
            f"{r['attacks'][a]['tpr_at_0_1pct_fpr']:.3f} · {r['attacks'][a]['tpr_at_1pct_fpr']:.3f}"
            for a in SHOWN
        )
        lines.append(
            f"| {r['k']} | {r['train_seconds']:.0f} | {r['attack_seconds']:.1f} | {cells} |"
        )
    return "\n".join(lines), rows


def default_breakdown() -> str:
    result = _timed_run(Path("runs/bench-scaling-default"), [])
    parts = [*(f"{n} {s:.0f} s" for n, s in result["stages"].items())]
    parts += [
        f"reference models {result['references']:.0f} s",
        f"attacks {result['attacks']:.0f} s",
    ]
    return (
        f"`pipeline run {' '.join(STAGES)}` (defaults, fresh): {result['total']:.0f} s in all: "
        + ", ".join(parts)
        + f". ε {result['epsilon']:.2f}, test accuracy {result['accuracy']:.3f}."
    )


def _figures(sizes: list[dict[str, Any]], refs: list[dict[str, Any]]) -> list[str]:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    DOCS.mkdir(exist_ok=True)
    fig = Figure(figsize=(6.4, 4.0), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    xs = [r["members"] for r in sizes]
    bottom = [0.0] * len(xs)
    parts = [
        ("train-ladp", lambda r: r["stages"]["train-ladp"], "//"),
        ("reference models", lambda r: r["references"], ".."),
        ("attacks", lambda r: r["attacks"], "xx"),
        ("prune + quantize", lambda r: r["stages"]["prune"] + r["stages"]["quantize"], ""),
    ]
    width = 0.6 * min(b - a for a, b in zip(xs, xs[1:], strict=False)) if len(xs) > 1 else 200
    for label, value, hatch in parts:
        heights = [value(r) for r in sizes]
        ax.bar(
            xs,
            heights,
            bottom=bottom,
            width=width,
            label=label,
            color="0.85",
            edgecolor="black",
            hatch=hatch,
        )
        bottom = [b + h for b, h in zip(bottom, heights, strict=True)]
    ax.set_xlabel("members (training-set size)")
    ax.set_ylabel("seconds (2 cores)")
    ax.set_xticks(xs)
    ax.legend(fontsize=8)
    fig.savefig(DOCS / "scaling-members.png", dpi=110, metadata={"Software": None})

    fig = Figure(figsize=(6.4, 4.0), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ks = [r["k"] for r in refs]
    for i, attack in enumerate(SHOWN):
        ax.plot(
            ks,
            [100 * r["attacks"][attack]["tpr_at_1pct_fpr"] for r in refs],
            marker="osD"[i],
            linestyle=["-", "--", ":"][i],
            color="black",
            label=attack,
        )
    ax.axhline(1.0, color="0.5", linestyle=(0, (1, 1)), label="chance (1%)")
    ax.set_xscale("log", base=2)
    ax.set_xticks(ks, [str(k) for k in ks])
    ax.set_xlabel("reference models")
    ax.set_ylabel("TPR at 1% FPR (%)")
    twin = ax.twinx()
    twin.bar(
        ks,
        [r["train_seconds"] for r in refs],
        width=[0.25 * k for k in ks],
        color="0.9",
        edgecolor="0.6",
        zorder=0,
    )
    twin.set_ylabel("training seconds of the references (bars)")
    ax.set_zorder(twin.get_zorder() + 1)
    ax.patch.set_visible(False)
    ax.legend(fontsize=8, loc="upper left")
    fig.savefig(DOCS / "scaling-references.png", dpi=110, metadata={"Software": None})
    return ["docs/scaling-members.png", "docs/scaling-references.png"]


def run() -> str:
    sizes_env = os.environ.get("PRIVCOMP_BENCH_SCALING_MEMBERS", "500,1000,2000,3000")
    sizes = [int(s) for s in sizes_env.split(",")]
    size_md, size_rows = size_table(sizes)
    ref_md, ref_rows = reference_table(REFERENCE_COUNTS)
    breakdown = default_breakdown()
    figures = _figures(size_rows, ref_rows)
    return "\n\n".join(
        [
            "### Training-set size",
            "mnist5k, defaults but attacks after the last stage only and 4 references; the "
            "other splits fixed (500 non-members, 250 public, 250 test, the rest population: "
            "the references train on halves of a pool that shrinks as the members grow, hence "
            "their falling cost).",
            size_md,
            f"![time per part against the training-set size]({figures[0]})",
            "### Reference models",
            "One DP target (train-ladp, defaults), 16 references trained like it; the attacks "
            "use the first k. With 500 non-members, TPR at 0.1% FPR is the TPR at zero false "
            "positives: a handful of records. On a DP target at ε 3 more references do not "
            "lift any attack above chance (the curves move within their noise); LiRA's gain "
            "with k is a non-private model's.",
            ref_md,
            f"![attack power and reference cost against the number of references]({figures[1]})",
            "### Where the default run's time goes",
            breakdown,
        ]
    )
