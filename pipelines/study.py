"""`pipeline compare-defenses`: the defense study, done the way Aerni et al. 2024 say it must be.

Every method trains on the same members with the same seed (so the same split, canaries, pool
and initial weights): the undefended baseline, each heuristic defense, and DP-SGD and LADP over a
grid of ε. Each is attacked by the adaptive suite (attacks fitted to what it releases; references
trained with the same defense or DP engine) with canaries among the members. Each defense is then
set against the DP model of equal test accuracy, interpolated on the ε grid; "no DP match" where
the grid does not reach that accuracy.

Each method is one run dir under <out>/runs/ (resumable: a finished method is reused), trained and
attacked in a worker of the executor, so independent methods run in parallel. The comparison is
written as study.json, study.md and figures (pipelines/study_report.py).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pipelines.errors import PrivcompError
from pipelines.executors import check_executor, close_executor, make_executor
from pipelines.progress import Reporter
from pipelines.rundir import read_json, stage_dir_name
from privacy.defenses import DEFENSES

SCHEMA_VERSION = 1
DEFAULT_EPSILONS = (1.0, 3.0, 8.0, 30.0, 100.0)
# Aerni et al.: TPR at 1% FPR needs a few hundred canaries of each kind to be more than noise.
DEFAULT_CANARIES = 250
BASELINE = "undefended"
DP_STAGES = {"dp-sgd": "train-dpsgd", "ladp": "train-ladp"}
HEADLINE = "tpr_at_1pct_fpr"  # on the canaries: the study's headline metric
STUDY_PRIVACY = (
    "The study folder is not private: it holds the undefended and the defended models (ε = ∞) "
    "and every DP model trained on the same members, in run dirs that no ledger composes. Each "
    "DP model's ε holds for that model released alone; keep the folder with the data owner."
)


@dataclass(frozen=True)
class StudyOptions:
    out: Path
    defenses: tuple[str, ...] = tuple(sorted(DEFENSES))
    model: str = "cnn"
    dataset: str = "mnist5k"
    epsilons: tuple[float, ...] = DEFAULT_EPSILONS
    canaries: int = DEFAULT_CANARIES
    references: int = 8  # per heuristic method (trained with its defense)
    dp_references: int = 4  # per DP method (trained through the DP engine: slower per model)
    # How the methods run: None takes [run] executor, workers and ray_address of the user's
    # configuration (each method then trains its references serially, in its worker).
    workers: int | None = None
    executor: str | None = None
    config: Path | None = None  # the user's TOML; the study's own settings win over it
    overrides: tuple[str, ...] = ()  # the user's --set, applied before the study's
    ray_address: str | None = None

    def __post_init__(self) -> None:
        if not self.defenses and not self.epsilons:
            raise PrivcompError("compare-defenses: no defenses and no ε to compare")
        shown = tuple(f"{e:g}" for e in self.epsilons)  # as run dirs name them
        for what, items in (("--defenses", self.defenses), ("--epsilon", shown)):
            if len(set(items)) != len(items):
                raise PrivcompError(f"{what} names a value twice: {', '.join(map(str, items))}")
        unknown = [d for d in self.defenses if d not in DEFENSES]
        if unknown:
            known = ", ".join(sorted(DEFENSES))
            raise PrivcompError(f"unknown defense(s) {', '.join(unknown)} (known: {known})")
        if not self.epsilons or any(not (e > 0 and math.isfinite(e)) for e in self.epsilons):
            raise PrivcompError("--epsilon needs one or more finite values > 0")
        if self.canaries < 0 or self.references < 2 or self.dp_references < 2:
            raise PrivcompError("need canaries >= 0 and references, dp-references >= 2")


@dataclass(frozen=True)
class Method:
    """One trained model of the study."""

    name: str  # "undefended", a defense, or "<engine> ε=<e>"
    kind: str  # baseline | defense | dp
    stage: str
    settings: tuple[str, ...]  # --set items of this method (over the study's common ones)
    epsilon: float | None = None
    engine: str | None = None  # the DP engine of a dp method

    @property
    def slug(self) -> str:
        """The run dir's name (ε as `:g` writes it: StudyOptions refuses two that look alike)."""
        return self.name.replace(" ", "-").replace("ε=", "eps")


def methods(options: StudyOptions) -> list[Method]:
    # Every method's references are trained like its target ("target"): the baseline's too,
    # where "auto" would give the cheap Adam recipe, so that the attacks compare like with like.
    like_target = 'evaluate.reference_recipe="target"'
    out = [Method(BASELINE, "baseline", "train", ('train.defense="none"', like_target))]
    out += [Method(d, "defense", "train", (f'train.defense="{d}"',)) for d in options.defenses]
    for engine, stage in DP_STAGES.items():
        for eps in sorted(options.epsilons):
            settings = [f"{stage}.epsilon={eps!r}"]
            if engine == "dp-sgd":
                # Flat clipping with privcomp's per-example norms (LADP's engine with one group):
                # the same mechanism as Opacus's, faster, and Opacus fails on resnet18's
                # in-place residual add.
                settings.append('train-dpsgd.per_example="privcomp"')
            out.append(
                Method(f"{engine} ε={eps:g}", "dp", stage, tuple(settings), eps, engine=engine)
            )
    return out


@dataclass(frozen=True)
class MethodJob:
    """What a worker needs to run one method (picklable)."""

    method: Method
    config: str | None
    settings: tuple[str, ...]
    run_dir: str


def common_settings(options: StudyOptions) -> list[str]:
    """What every method shares: data, model, seed, canaries, and the attacks run once, on the
    trained model, with references trained in this worker (the executor runs methods)."""
    return [
        *options.overrides,
        f'run.dataset="{options.dataset}"',
        f'run.model="{options.model}"',
        'run.evaluate="last"',
        f"data.canaries={options.canaries}",
        'run.executor="serial"',
    ]


def jobs(options: StudyOptions) -> list[MethodJob]:
    common = common_settings(options)
    out = []
    for method in methods(options):
        refs = options.dp_references if method.kind == "dp" else options.references
        settings = (*common, f"evaluate.shadow_models={refs}", *method.settings)
        out.append(
            MethodJob(
                method=method,
                config=str(options.config) if options.config else None,
                settings=settings,
                run_dir=str(options.out / "runs" / method.slug),
            )
        )
    return out


def run_method(job: MethodJob) -> dict[str, Any]:
    """Train and attack one method in its run dir; a failure is reported, not raised, so that
    one method's error does not discard the others' hours."""
    from rich.console import Console

    from models.errors import UserError
    from pipelines.config import load_config
    from pipelines.runner import run_pipeline

    run_dir = Path(job.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    with (run_dir / "study.log").open("a") as log:
        reporter = Reporter(Console(file=log, width=100))
        try:
            config = load_config(Path(job.config) if job.config else None, list(job.settings))
            summary = run_pipeline(
                [job.method.stage], config=config, run_dir=run_dir, reporter=reporter
            )
        except Exception as exc:  # reported in study.md; the other methods go on
            line = str(exc).splitlines()[0] if str(exc) else ""
            kind = "" if isinstance(exc, UserError) else f"{type(exc).__name__}: "
            return {"method": asdict(job.method), "error": kind + line}
    metrics = read_json(run_dir / stage_dir_name(1, job.method.stage) / "metrics.json")
    return {
        "method": asdict(job.method),
        "summary": summary,
        "stage_metrics": metrics.get("stage", {}),
    }


# ---- analysis ------------------------------------------------------------------------------


@dataclass
class MethodRow:
    """What the study reports of one method."""

    name: str
    kind: str
    epsilon: float | None
    engine: str | None
    release: str
    noise: str  # secure | reproducible (then no ε printed here holds against the seed's holder)
    test_accuracy: float
    attacks: dict[str, Any]  # attack -> metrics (population average, with "canaries" nested)
    cost: dict[str, Any]
    strongest: dict[str, Any] = field(default_factory=dict)  # on the canaries, by HEADLINE
    match: dict[str, Any] | None = None  # the DP model of equal accuracy (defenses only)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def method_row(result: dict[str, Any]) -> MethodRow:
    method, row = result["method"], result["summary"]["stages"][0]
    attacks = row.get("attacks", {})
    return MethodRow(
        name=method["name"],
        kind=method["kind"],
        epsilon=method["epsilon"],
        engine=method["engine"],
        release=row["privacy"].get("release", "scores"),
        noise=result["summary"]["run"].get("noise", "secure"),
        test_accuracy=float(row["utility"]["test_accuracy"]),
        attacks=attacks,
        cost=dict(result["stage_metrics"].get("cost", {})),
        strongest=strongest_on_canaries(attacks),
    )


def _headline(metrics: dict[str, Any], population: bool) -> dict[str, Any] | None:
    """The headline numbers of one attack: on its canaries, or its population average."""
    source = metrics if population else metrics.get("canaries")
    if not source:
        return None
    ci = source.get(f"{HEADLINE}_ci") or [None, None]
    return {"value": float(source[HEADLINE]), "ci": list(ci), "auc": source.get("auc")}


def strongest_on_canaries(attacks: dict[str, Any]) -> dict[str, Any]:
    """The attack with the highest canary TPR at 1% FPR (the population average where a run has
    no canaries). A maximum over attacks, uncorrected for the selection: read it as such."""
    best: dict[str, Any] = {}
    for name, metrics in attacks.items():
        population = "canaries" not in metrics
        numbers = _headline(metrics, population)
        if numbers and (not best or numbers["value"] > best["value"]):
            best = {"attack": name, "on": "population" if population else "canaries", **numbers}
    return best


def interpolate_match(
    accuracy: float, curve: Sequence[tuple[float, float, dict[str, Any]]]
) -> dict[str, Any] | None:
    """The DP point of equal test accuracy on a curve of (ε, accuracy, strongest) sorted by ε:
    the smallest ε at which the curve reaches `accuracy`, linear in log ε between the first two
    grid points whose accuracies bracket it (a noisy curve may cross it again at larger ε: the
    cheapest match is the one a user would pick); None where no two do."""
    for i, (e0, a0, s0) in enumerate(curve):
        if a0 == accuracy:
            return {"epsilon": e0, "value": s0["value"], "ci": list(s0["ci"])}
        if i + 1 == len(curve):
            break
        e1, a1, s1 = curve[i + 1]
        if min(a0, a1) < accuracy < max(a0, a1):
            t = (accuracy - a0) / (a1 - a0)
            eps = math.exp(math.log(e0) + t * (math.log(e1) - math.log(e0)))

            def lerp(u: Any, v: Any, t: float = t) -> float | None:
                return None if u is None or v is None else float(u + t * (v - u))

            ci = [lerp(s0["ci"][i], s1["ci"][i]) for i in range(2)]
            return {"epsilon": eps, "value": lerp(s0["value"], s1["value"]), "ci": ci}
    return None


def _apart(low: dict[str, Any], high: dict[str, Any]) -> bool | None:
    """Whether low's interval lies wholly below high's (None: an interval is missing)."""
    lo_hi, hi_lo = (low.get("ci") or [None, None])[1], (high.get("ci") or [None, None])[0]
    if lo_hi is None or hi_lo is None:
        return None
    return bool(lo_hi < hi_lo)


def verdict(
    defense: dict[str, Any],
    dp: dict[str, Any] | None,
    *,
    below_grid: dict[str, Any] | None = None,
) -> str:
    """Whether the defense leaks less than the DP model of equal accuracy, beyond the intervals.

    below_grid: the DP model at the grid's smallest ε when it is already more accurate than the
    defense (no match, but DP is better on accuracy there)."""
    if dp is None:
        if below_grid is not None and _apart(below_grid, defense):
            return "DP dominates (more accurate and leaks less at the smallest ε)"
        return "no DP match"
    if _apart(defense, dp):
        return "defense leaks less"
    if _apart(dp, defense):
        return "DP leaks less"
    if _apart(defense, dp) is None:
        return "not tested (no interval)"
    return "no significant difference"


def analyse(results: list[dict[str, Any]]) -> dict[str, Any]:
    """study.json's content: a row per method, defenses matched against each DP engine."""
    failed = [{"method": r["method"]["name"], "error": r["error"]} for r in results if "error" in r]
    rows = [method_row(r) for r in results if "error" not in r]
    baseline = next((r for r in rows if r.kind == "baseline"), None)
    base_cost = baseline.cost if baseline else {}
    for row in rows:
        for key in ("seconds", "peak_memory_bytes"):
            ref = base_cost.get(key)
            if ref and row.cost.get(key) is not None:
                row.cost[f"{key}_vs_baseline"] = row.cost[key] / ref
    curves = {
        engine: sorted(
            (
                (r.epsilon, r.test_accuracy, r.strongest)
                for r in rows
                if r.engine == engine and r.epsilon is not None and r.strongest
            ),
            key=lambda point: point[0],
        )
        for engine in DP_STAGES
    }
    for row in rows:
        if row.kind == "dp" or not row.strongest:
            continue
        row.match = {}
        for engine, curve in curves.items():
            dp = interpolate_match(row.test_accuracy, curve)
            lowest = curve[0] if curve else None
            below = lowest[2] if lowest and lowest[1] > row.test_accuracy else None
            row.match[engine] = {
                "dp": dp,
                "verdict": verdict(row.strongest, dp, below_grid=below),
            }
    noise = sorted({r.noise for r in rows})
    return {
        "schema_version": SCHEMA_VERSION,
        "privacy": STUDY_PRIVACY,
        "noise": noise,
        "headline": f"strongest attack's {HEADLINE} on the canaries, 95% interval",
        "methods": [r.to_dict() for r in rows],
        "failed": failed,
    }


def run_study(options: StudyOptions, *, reporter: Reporter | None = None) -> dict[str, Any]:
    """Train and attack every method, then write study.json, study.md and the figures."""
    from pipelines.config import load_config
    from pipelines.runner import build_context
    from pipelines.study_report import write_report

    reporter = reporter or Reporter()
    todo = jobs(options)
    configs = [load_config(Path(j.config) if j.config else None, list(j.settings)) for j in todo]
    # Every method's configuration, and the data and split they share (canaries included),
    # checked before any method trains.
    build_context(configs[0], options.out, reporter)
    options.out.mkdir(parents=True, exist_ok=True)
    user = load_config(options.config, list(options.overrides)).run
    executor_name = options.executor or user.executor
    check_executor(executor_name)
    workers = options.workers or user.workers
    if executor_name != "ray":  # Ray's CPUs are the cluster's; a pool no larger than the cores
        workers = 1 if executor_name == "serial" else min(workers, os.cpu_count() or 1)
    reporter.info(
        f"defense study: {len(todo)} methods in {options.out} "
        f"({workers} worker(s), {executor_name}; each method's log: runs/<method>/study.log)"
    )
    # A new worker process per method (fresh_workers): each method's peak memory its own.
    executor = make_executor(
        executor_name,
        workers=workers,
        address=user.ray_address if options.ray_address is None else options.ray_address,
        fresh_workers=True,
        report=reporter.info,
    )
    start = time.perf_counter()
    with reporter.task("methods trained and attacked") as progress:
        try:
            results = executor.map(run_method, todo, progress=progress)
        finally:
            close_executor(executor)  # a Ray cluster the study started
    study = analyse(results)
    study["seconds"] = time.perf_counter() - start
    study["options"] = {
        "defenses": list(options.defenses),
        "model": options.model,
        "dataset": options.dataset,
        "epsilons": list(options.epsilons),
        "canaries": options.canaries,
        "references": options.references,
        "dp_references": options.dp_references,
        "workers": workers,
    }
    write_report(study, options.out)
    failed = study["failed"]
    if failed:
        first = failed[0]
        raise PrivcompError(
            f"{len(failed)} of {len(todo)} methods failed (listed in {options.out / 'study.md'}; "
            f"the others are kept, a rerun retries only these): {first['method']}: "
            f"{first['error']}"
        )
    return study
