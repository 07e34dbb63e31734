"""`pipeline audit RUN_DIR`: an empirical audit of the DP mechanism a run's training stage ran.

Both worlds run the run's own engine (privacy.audit: the stage's engine, settings, allocation
schedule and initial weights, with the (σ, q) the ledger recorded) for a few steps, many times
with fresh noise: the members alone, and the members plus a white-box gradient canary that is in
every step's batch. The canary is in every batch, so the claim to test is the accountant's ε for
those steps at q = 1. From the released parameters' displacement along the canary's direction in
each group (and their likelihood-ratio combination) the audit computes, per statistic:

- a Clopper–Pearson ε lower bound (Jagielski et al. 2020): the threshold is chosen on one half of
  the trials, the error rates are bounded on the other half;
- a GDP-based bound: μ̂ = (mean_with − mean_without) / sd, its lower confidence bound, and the
  tight ε of that μ at δ (valid while the statistic is Gaussian, which it is for Gaussian noise
  in the few-step, nearly linear regime; otherwise it is an estimate).

The confidence (95% by default) is for the whole family: Bonferroni over every statistic and both
bounds. The audit fails (`pipeline audit` exits with 3) when any lower bound exceeds the claim: a
broken mechanism or a broken claim.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pipelines.audit_statistics import (
    COMBINED,
    CONFIDENCE,
    StatisticBounds,
    audit_statistics,
    likelihood_weights,
)
from pipelines.config import Config, load_config
from pipelines.context import DP_TRAINING_STAGES, RunContext
from pipelines.data import Splits
from pipelines.errors import PrivcompError
from pipelines.executors import Executor, check_executor, close_executor, make_executor
from pipelines.progress import Reporter
from pipelines.rundir import locked, read_json, write_json
from pipelines.runner import build_context
from pipelines.settings.training import DPTrainingSettings
from privacy.accounting import compute_epsilon, format_epsilon
from privacy.audit import TrialJob, TrialResult, run_trials, trial_seeds

AUDIT_FILE = "audit.json"
DEFAULT_TRIALS = 250  # per world
DEFAULT_STEPS = 2
AUDIT_SEED_KEY = 0xA0D17  # the audit's public randomness (canary directions), from the run seed


@dataclass(frozen=True)
class AuditReport:
    run_dir: str
    stage: str
    engine: str
    noise_multiplier: float
    sample_rate: float  # of the members; the canary is in every batch (q = 1)
    steps: int
    trials: int  # per world
    delta: float
    accountant: str
    claimed_epsilon: float  # the accountant's ε for `steps` steps at q = 1
    confidence: float
    cp_epsilon_lower_bound: float
    gdp_epsilon_lower_bound: float
    gdp_epsilon_estimate: float  # the combined statistic's point estimate
    passed: bool
    noise: str
    seconds: float
    statistics: list[StatisticBounds] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def line(self) -> str:
        verdict = "passed" if self.passed else "FAILED: a lower bound exceeds the claim"
        return (
            f"audit {verdict}: ε lower bound "
            f"{format_epsilon(self.cp_epsilon_lower_bound, lower_bound=True)} (Clopper–Pearson) / "
            f"{format_epsilon(self.gdp_epsilon_lower_bound, lower_bound=True)} (GDP, assumes a "
            f"Gaussian statistic), GDP estimate {self.gdp_epsilon_estimate:.3g}, claimed ε "
            f"{format_epsilon(self.claimed_epsilon)} "
            f"for {self.steps} steps at q = 1 (σ = {self.noise_multiplier:.3g}, "
            f"{self.trials} trainings per world, {self.confidence:.0%} overall)"
        )


# ---- the run's mechanism ------------------------------------------------------------------------


def _read_run(run_dir: Path) -> tuple[Config, dict[str, Any]]:
    config_file, ledger_file = run_dir / "config.toml", run_dir / "ledger.json"
    if not config_file.is_file() or not ledger_file.is_file():
        raise PrivcompError(f"{run_dir} is not a privcomp run directory (no config.toml/ledger)")
    return load_config(config_file), read_json(ledger_file)


def _training_entry(ledger: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """The ledger entry of the run's last DP-SGD or LADP training stage, and its engine
    (privacy.engines)."""
    for entry in reversed(ledger["stages"]):
        if entry["kind"] == "dp" and "engine" in entry and entry["stage"] in DP_TRAINING_STAGES:
            return dict(entry), str(entry["engine"])
    raise PrivcompError(
        "pipeline audit tests a DP training stage (train-ladp or train-dpsgd; not train-fl, "
        "whose clients' engines it does not replay): this run has none whose ledger entry names "
        "its engine (runs made before privcomp recorded it need a fresh run)"
    )


def audit_run(
    run_dir: Path,
    *,
    trials: int = DEFAULT_TRIALS,
    steps: int = DEFAULT_STEPS,
    workers: int | None = None,
    executor: str | None = None,
    ray_address: str | None = None,
    confidence: float = CONFIDENCE,
    reporter: Reporter | None = None,
) -> AuditReport:
    """Audit the run's training mechanism; write audit.json into the run dir.

    executor, workers, ray_address: None takes the run's own [run] setting."""
    if trials < 4 or steps < 1 or not 0 < confidence < 1:
        raise PrivcompError("audit: need trials >= 4, steps >= 1 and 0 < confidence < 1")
    reporter = reporter or Reporter()
    config, ledger = _read_run(run_dir)
    run = config.run
    executor = run.executor if executor is None else executor
    check_executor(executor)
    workers = run.workers if workers is None else workers
    address = run.ray_address if ray_address is None else ray_address
    runner = make_executor(executor, workers=workers, address=address, report=reporter.info)
    with locked(run_dir, option=None):  # no run may write the ledger while the audit reads it
        return _audit(
            run_dir,
            config,
            ledger,
            trials=trials,
            steps=steps,
            workers=workers,
            runner=runner,
            confidence=confidence,
            reporter=reporter,
        )


def _audit(
    run_dir: Path,
    config: Config,
    ledger: dict[str, Any],
    *,
    trials: int,
    steps: int,
    workers: int,
    runner: Executor,
    confidence: float,
    reporter: Reporter,
) -> AuditReport:
    entry, engine = _training_entry(ledger)
    ctx = build_context(config, run_dir, reporter)
    recorded = Splits.from_json((run_dir / "splits.json").read_text())
    if recorded.to_json() != ctx.splits.to_json():
        raise PrivcompError(f"{run_dir}/splits.json does not match the run's configuration")
    stage = entry["stage"]
    section = config.section(stage)
    assert isinstance(section, DPTrainingSettings)
    settings = section.space().released_settings(entry)
    jobs = _jobs(ctx, engine, settings, trials=trials, steps=steps, workers=workers)
    start = time.perf_counter()
    with reporter.task(f"audit: {2 * trials} short trainings of {stage}") as progress:
        try:
            results = runner.map(run_trials, jobs, progress=progress)
        finally:
            close_executor(runner)  # a Ray cluster the audit started
    seconds = time.perf_counter() - start
    first = results[0]
    if not math.isclose(first.sample_rate, float(entry["sample_rate"]), rel_tol=1e-12):
        raise PrivcompError("audit: the engine's sampling rate differs from the run's ledger")
    out = np.concatenate(
        [r.displacements for j, r in zip(jobs, results, strict=True) if not j.canary]
    )
    inn = np.concatenate([r.displacements for j, r in zip(jobs, results, strict=True) if j.canary])
    delta, accountant = float(entry["delta"]), str(settings.get("accountant", "prv"))
    found = audit_statistics(
        out,
        inn,
        names=[g.name for g in first.groups],
        weights=likelihood_weights(first),
        delta=delta,
        confidence=confidence,
    )
    report = _report(
        first,
        found,
        run_dir=run_dir,
        stage=stage,
        engine=engine,
        steps=steps,
        trials=trials,
        delta=delta,
        accountant=accountant,
        confidence=confidence,
        noise=ctx.noise_mode,
        seconds=seconds,
    )
    write_json(run_dir / AUDIT_FILE, report.to_dict())
    return report


def _report(
    first: TrialResult,
    found: list[StatisticBounds],
    *,
    run_dir: Path,
    stage: str,
    engine: str,
    steps: int,
    trials: int,
    delta: float,
    accountant: str,
    confidence: float,
    noise: str,
    seconds: float,
) -> AuditReport:
    """The claim (ε of the audited steps at q = 1) beside the strongest lower bounds found."""
    claimed = compute_epsilon(
        noise_multiplier=first.noise_multiplier,
        sample_rate=1.0,
        steps=steps,
        delta=delta,
        accountant=accountant,
    )
    combined = next(s for s in found if s.name == COMBINED)
    cp = max(s.cp_lower_bound for s in found)
    gdp = max(s.gdp_lower_bound for s in found)
    return AuditReport(
        run_dir=str(run_dir),
        stage=stage,
        engine=engine,
        noise_multiplier=first.noise_multiplier,
        sample_rate=first.sample_rate,
        steps=steps,
        trials=trials,
        delta=delta,
        accountant=accountant,
        claimed_epsilon=claimed,
        confidence=confidence,
        cp_epsilon_lower_bound=cp,
        gdp_epsilon_lower_bound=gdp,
        gdp_epsilon_estimate=combined.gdp_estimate,
        passed=max(cp, gdp) <= claimed,
        noise=noise,
        seconds=round(seconds, 1),
        statistics=found,
    )


def _jobs(
    ctx: RunContext,
    engine: str,
    settings: dict[str, Any],
    *,
    trials: int,
    steps: int,
    workers: int,
) -> list[TrialJob]:
    """Trials split into a few jobs per world, the worlds interleaved so that both see the
    same machine load."""
    x, y = ctx.split("members")
    noise = ctx.derived_seed(AUDIT_SEED_KEY) if ctx.reproducible_noise else None
    chunks = max(1, min(trials, 2 * workers))
    jobs = []
    for world in (0, 1):
        seeds = trial_seeds(noise, world, trials)
        for part in np.array_split(np.arange(trials), chunks):
            jobs.append(
                TrialJob(
                    engine=engine,
                    config=settings,
                    arch=ctx.model_arch(),
                    init_seed=ctx.seed,
                    seed=ctx.seed,
                    x=x,
                    y=y,
                    public=ctx.split("public"),
                    canary=bool(world),
                    steps=steps,
                    noise_seeds=tuple(seeds[i] for i in part),
                    direction_seed=ctx.derived_seed(AUDIT_SEED_KEY, 1),
                )
            )
    return [j for pair in zip(jobs[:chunks], jobs[chunks:], strict=True) for j in pair]
