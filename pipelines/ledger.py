"""Privacy ledger: what each stage spent, composed per private data set, and what each artifact
guarantees.

Accounting model (DESIGN §4, §5):

- Every DP mechanism privcomp runs on private data is a (Poisson-subsampled) Gaussian mechanism:
  a step of LADP or DP-SGD (noise multiplier σ_eff, rate q), and a PATE GNMax answer (the noisy
  vote histogram has L2 sensitivity √2, so noise std σ is a Gaussian mechanism with multiplier
  σ/√2 and q = 1). A Spend of kind "dp" therefore carries its history entry (noise_multiplier,
  sample_rate, steps) and its accountant in `details`.
- Composition: one history per private data set (the split a stage read, "members" by default).
  The ledger composes the *concatenated* history with one accountant (Opacus PRV or RDP, the
  accountant of the first DP spend on that data set): a DP fine-tune after LADP continues the
  same accountant instead of adding ε's. Composing Gaussian mechanisms by PRV convolution or by
  adding RDP curves is the adaptive composition theorem of each accountant, so the result is an
  upper bound for any mix of LADP, fine-tune and PATE spends. A DP spend without a history
  (only (ε, δ) known) is composed with the rest by basic composition (ε and δ add), also valid.
- Artifacts: a stage that trains from scratch starts a new lineage; a stage that modifies its
  input (Spend.lineage "continue": fine-tuning, calibration) extends it; post-processing
  keeps it. An artifact's ε composes its lineage only (it is a function of those mechanisms and
  public data). The run's total composes everything that read each data set; disjoint data sets
  compose in parallel (the total is the largest).
- A stage that reads private data without DP (kind "none") makes its artifact and its data set's
  total "not private" (ε None) and records a warning, which is printed when a reporter is given.
- Budget ([budget] epsilon > 0): the runner plans every stage's spend before anything runs
  (pipelines.planning) and refuses a run whose total would pass the cap; `Ledger.admit` refuses
  one stage before it runs. Reading private data without DP can never fit a finite cap.
"""

from __future__ import annotations

import copy
import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pipelines.errors import PrivcompError
from pipelines.rundir import read_json, stage_dir_name
from pipelines.settings.run import BudgetSettings
from pipelines.spend import DEFAULT_DATASET, Guarantee, Spend
from privacy.accounting import (
    ACCOUNTANTS,
    CALIBRATION_RTOL,
    MAX_NOISE_MULTIPLIER,
    format_epsilon,
    history_epsilon,
)
from privacy.hyperparameters import gaussian_rdp, rdp_epsilon


@dataclass(frozen=True)
class GaussianSteps:
    """`steps` Poisson-subsampled Gaussian mechanisms with noise multiplier σ and rate q."""

    noise_multiplier: float
    sample_rate: float
    steps: int


@dataclass(frozen=True)
class RDPCurve:
    """A mechanism known by its Rényi-DP curve (the private hyper-parameter search, whose bound
    is an RDP bound): a history holding one is composed in RDP."""

    orders: tuple[float, ...]
    rdp: tuple[float, ...]


@dataclass(frozen=True)
class Opaque:
    """A DP mechanism known only by its (ε, δ): composed with basic composition."""

    epsilon: float
    delta: float


Mechanism = GaussianSteps | RDPCurve | Opaque


def mechanism_of(spend: Spend) -> Mechanism:
    """The history entry of a "dp" spend: its RDP curve when details carry one (`rdp_orders`,
    `rdp`), else GaussianSteps when they say σ, q and steps, else its (ε, δ)."""
    d = spend.details
    if "rdp" in d and "rdp_orders" in d:
        return RDPCurve(tuple(float(a) for a in d["rdp_orders"]), tuple(float(r) for r in d["rdp"]))
    if all(k in d for k in ("noise_multiplier", "sample_rate", "steps")):
        return GaussianSteps(float(d["noise_multiplier"]), float(d["sample_rate"]), int(d["steps"]))
    if spend.epsilon is None or spend.delta is None:
        raise ValueError("a 'dp' spend needs (noise_multiplier, sample_rate, steps) or (ε, δ)")
    return Opaque(float(spend.epsilon), float(spend.delta))


def _gaussian_epsilon(history: Sequence[GaussianSteps], *, delta: float, accountant: str) -> float:
    entries = [(m.noise_multiplier, m.sample_rate, m.steps) for m in history if m.steps > 0]
    if not entries:
        return 0.0
    if any(sigma <= 0 for sigma, _, _ in entries):
        return math.inf
    return history_epsilon(entries, delta=delta, accountant=accountant)


def _rdp_epsilon(
    history: Sequence[GaussianSteps], curves: Sequence[RDPCurve], *, delta: float
) -> float:
    """ε of Gaussian entries and RDP curves composed in RDP (curves add order by order)."""
    orders = curves[0].orders
    if any(c.orders != orders for c in curves):
        raise ValueError("RDP curves on different orders cannot be composed")
    total = np.sum([np.asarray(c.rdp, dtype=float) for c in curves], axis=0)
    for m in history:
        if m.steps > 0:
            if m.noise_multiplier <= 0:
                return math.inf
            total = total + gaussian_rdp(
                noise_multiplier=m.noise_multiplier,
                sample_rate=m.sample_rate,
                steps=m.steps,
                orders=orders,
            )
    return rdp_epsilon(total, delta=delta, orders=orders)


def compose(history: Sequence[Mechanism], *, delta: float, accountant: str = "prv") -> Guarantee:
    """(ε, δ) of running every mechanism in history (adaptively) on the same data set.

    Gaussian entries are composed by `accountant` at `delta`, or, when the history holds an RDP
    curve, in RDP together with it (then the guarantee's accountant is "rdp"); opaque entries
    are added to the result (basic composition), their δ's too.
    """
    if accountant not in ACCOUNTANTS:
        raise ValueError(f"unknown accountant '{accountant}' (known: {', '.join(ACCOUNTANTS)})")
    if not 0 < delta < 1:
        raise ValueError(f"delta must be in (0, 1), got {delta}")
    return _compose(tuple(history), delta, accountant)


@functools.lru_cache(maxsize=256)
def _compose(history: tuple[Mechanism, ...], delta: float, accountant: str) -> Guarantee:
    """compose() memoised: a run's ledger asks for the same history after every stage, and a PRV
    evaluation takes about a second."""
    gaussian = [m for m in history if isinstance(m, GaussianSteps)]
    curves = [m for m in history if isinstance(m, RDPCurve)]
    opaque = [m for m in history if isinstance(m, Opaque)]
    if curves:
        eps, accountant = _rdp_epsilon(gaussian, curves, delta=delta), "rdp"
    else:
        eps = _gaussian_epsilon(gaussian, delta=delta, accountant=accountant)
    eps += math.fsum(m.epsilon for m in opaque)
    total_delta = delta + math.fsum(m.delta for m in opaque)
    return Guarantee(None if math.isinf(eps) else eps, total_delta, accountant)


def calibrate_continuation(
    history: Sequence[Mechanism],
    *,
    sample_rate: float,
    steps: int,
    target_epsilon: float,
    delta: float,
    accountant: str = "prv",
) -> float:
    """Smallest noise multiplier σ (to 0.2%) such that history + `steps` subsampled Gaussian steps
    (σ, sample_rate) compose to at most target_epsilon. The returned σ is always verified.

    The root is bracketed on the RDP accountant (fast, looser), then found on `accountant` by
    regula falsi in log σ (Illinois variant), which needs a handful of PRV evaluations.
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if not 0 < sample_rate <= 1:
        raise ValueError(f"sample rate must be in (0, 1], got {sample_rate}")
    base = compose(history, delta=delta, accountant=accountant).epsilon
    if base is None or base >= target_epsilon:
        spent = format_epsilon(base, digits=4)
        raise ValueError(
            f"the history already spends epsilon = {spent} >= target {target_epsilon:g}: "
            "no noise multiplier can fit more steps"
        )

    def excess_on(mechanism: str) -> Excess:
        """log(ε(σ) - base) - log(target - base): <= 0 means σ fits. The added ε falls roughly
        like a power of σ, so this is nearly linear in log σ (the secant's best case)."""
        start = base if mechanism == accountant else None
        if start is None:
            start = compose(history, delta=delta, accountant=mechanism).epsilon or 0.0
        room = math.log(max(target_epsilon - start, 1e-12))
        cache: dict[float, float] = {}

        def excess(sigma: float) -> float:
            if sigma not in cache:
                step = GaussianSteps(sigma, sample_rate, steps)
                eps = compose([*history, step], delta=delta, accountant=mechanism).epsilon
                if eps is None:
                    cache[sigma] = math.inf
                elif eps <= target_epsilon:
                    cache[sigma] = min(0.0, math.log(max(eps - start, 1e-12)) - room)
                else:
                    cache[sigma] = max(1e-12, math.log(eps - start) - room)
            return cache[sigma]

        return excess

    rdp = excess_on("rdp")
    lo, hi = _solve(rdp, *_bracket(rdp, start=1.0, factor=2.0))
    if accountant != "rdp":
        exact = excess_on(accountant)
        lo, hi = _solve(exact, *_bracket(exact, start=hi, factor=2.0))
    return hi


Excess = Callable[[float], float]


def _bracket(excess: Excess, *, start: float, factor: float) -> tuple[float, float]:
    """(lo, hi) with excess(lo) > 0 and excess(hi) <= 0 (lo = 0 when any σ > 0 fits)."""
    if excess(start) <= 0:
        hi, lo = start, start / factor
        while excess(lo) <= 0:
            hi, lo = lo, lo / factor
            if lo < 1e-6:  # the steps are nearly free
                return 0.0, hi
        return lo, hi
    lo, hi = start, start * factor
    while excess(hi) > 0:
        lo, hi = hi, hi * factor
        if hi > MAX_NOISE_MULTIPLIER:
            raise ValueError("no noise multiplier up to 1e6 fits the target epsilon")
    return lo, hi


def _solve(excess: Excess, lo: float, hi: float) -> tuple[float, float]:
    """Shrink (lo, hi) to CALIBRATION_RTOL keeping excess(hi) <= 0 < excess(lo).

    ε is smooth and monotone in σ, nearly linear in log-log, so the secant through the bracket's
    ends predicts the root well: probe just above and just below the prediction, which closes
    the bracket in a few evaluations; bisect when a round did not halve it.
    """
    if lo <= 0:
        return lo, hi
    f_lo, f_hi = excess(lo), excess(hi)

    def probe(x: float) -> None:
        nonlocal lo, hi, f_lo, f_hi
        if lo < x < hi:
            f = excess(x)
            if f <= 0:
                hi, f_hi = x, f
            else:
                lo, f_lo = x, f

    while hi - lo > CALIBRATION_RTOL * hi:
        width = hi - lo
        if math.isfinite(f_lo) and f_lo > f_hi:
            a, b = math.log(lo), math.log(hi)
            root = math.exp(b - f_hi * (b - a) / (f_hi - f_lo))
        else:
            root = math.sqrt(lo * hi)
        for x in (root * (1 + CALIBRATION_RTOL / 3), root * (1 - CALIBRATION_RTOL / 3)):
            if hi - lo > CALIBRATION_RTOL * hi:
                probe(x)
        if hi - lo > 0.5 * width:
            probe(math.sqrt(lo * hi))
    return lo, hi


# ---- the ledger ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Budget:
    """[budget]: a cap on the total ε per private data set (None: no cap), and the δ at which
    every composition is reported (None: the δ of the first DP spend on that data set)."""

    epsilon: float | None = None
    delta: float | None = None

    @classmethod
    def from_settings(cls, section: BudgetSettings) -> Budget:
        return cls(epsilon=section.epsilon or None, delta=section.delta or None)


@dataclass
class _Account:
    """Everything spent on one private data set, or one artifact's lineage."""

    history: list[Mechanism] = field(default_factory=list)
    accountant: str | None = None
    delta: float | None = None
    private: bool = True
    single: Guarantee | None = None  # the mechanism's own report while it is alone
    cached: Guarantee | None = None  # compose() of the current history (PRV takes a second)

    def add(self, mechanism: Mechanism, spend: Spend, budget: Budget) -> None:
        if self.accountant is None:
            self.accountant = str(spend.details.get("accountant", "prv"))
            self.delta = budget.delta or spend.delta
        self.history.append(mechanism)
        reported = spend.epsilon is not None and spend.delta == self.delta
        only = len(self.history) == 1 and reported
        self.single = Guarantee(spend.epsilon, spend.delta, self.accountant) if only else None
        self.cached = None

    def guarantee(self) -> Guarantee:
        if not self.private:
            return Guarantee(None, None)
        if not self.history:
            return Guarantee(0.0, 0.0)
        if self.single is not None:  # one mechanism: its own accountant's report, as is
            return self.single
        if self.cached is None:
            assert self.delta is not None and self.accountant is not None
            self.cached = compose(self.history, delta=self.delta, accountant=self.accountant)
        return self.cached


class Ledger:
    """Records stage spends in order; `record` returns the new artifact's guarantee."""

    def __init__(
        self, budget: Budget | None = None, *, warn: Callable[[str], None] | None = None
    ) -> None:
        self.budget = budget or Budget()
        self.warn = warn
        self.entries: list[dict[str, Any]] = []
        self.warnings: list[str] = []
        self.datasets: dict[str, _Account] = {}
        self.lineage: _Account | None = None  # the latest artifact's
        self.current: Guarantee | None = None

    # -- recording

    def record(self, stage: str, spend: Spend, *, earlier: Sequence[Spend] = ()) -> Guarantee:
        """Record a stage's spend. `earlier`: DP releases of this same stage in earlier attempts
        whose outputs were replaced (a forced re-run): anyone may hold those files too, so they
        are composed into the data set's total and into the new artifact's lineage."""
        details = spend.details
        name = spend.dataset
        continues = spend.lineage == "continue"
        extra: dict[str, Any] = {}
        if spend.kind == "dp":
            releases = [*(e for e in earlier if e.kind == "dp"), spend]
            if not continues:
                self.lineage = _Account()
            lineage = self._require_lineage(stage)
            for release in releases:
                mechanism = mechanism_of(release)
                self.datasets.setdefault(name, _Account()).add(mechanism, release, self.budget)
                lineage.add(mechanism, release, self.budget)
            extra = {"dataset": name, "spend": {"epsilon": spend.epsilon, "delta": spend.delta}}
            if len(releases) > 1:
                extra["earlier_releases"] = len(releases) - 1
        elif spend.kind == "none":
            self.datasets.setdefault(name, _Account()).private = False
            if continues:
                self._require_lineage(stage)
            self.lineage = _Account(private=False)
            message = (
                f"stage '{stage}' read private data '{name}' without a DP mechanism: its "
                "artifact and the run's total are NOT private (epsilon = infinite)"
            )
            self.warnings.append(message)
            if self.warn is not None:
                self.warn(f"[bold red]warning:[/bold red] {message}")
            extra = {"dataset": name, "warning": message}
        else:  # post-processing
            self._require_lineage(stage)
        assert self.lineage is not None
        self.current = self.lineage.guarantee()
        own = {k: v for k, v in details.items() if k not in ("epsilon", "delta")}
        self.entries.append(
            {"stage": stage, "kind": spend.kind, **own, **asdict(self.current), **extra}
        )
        return self.current

    def record_elsewhere(self, label: str, spend: Spend) -> None:
        """A DP release of the members that this pipeline does not build on (another pipeline's
        stage in the same run dir): it counts in its data set's total, in no artifact's lineage."""
        name = spend.dataset
        self.datasets.setdefault(name, _Account()).add(mechanism_of(spend), spend, self.budget)
        self.entries.append(
            {
                "stage": label,
                "kind": "earlier-release",
                "dataset": name,
                "spend": {"epsilon": spend.epsilon, "delta": spend.delta},
                "note": "released in this run dir by another pipeline: counted in the total",
            }
        )

    def _require_lineage(self, stage: str) -> _Account:
        if self.lineage is None:
            raise ValueError(f"stage '{stage}' works on an artifact that no stage produced")
        return self.lineage

    # -- questions

    def lineage_history(self) -> tuple[list[Mechanism], str, float | None, bool]:
        """(history, accountant, delta, private) of the latest artifact."""
        lin = self.lineage or _Account()
        return list(lin.history), lin.accountant or "prv", lin.delta, lin.private

    def dataset_total(self, name: str = DEFAULT_DATASET) -> Guarantee:
        account = self.datasets.get(name)
        return account.guarantee() if account else Guarantee(0.0, 0.0)

    def total(self) -> Guarantee:
        """The run's total: the largest over private data sets (they are disjoint)."""
        if not self.datasets:
            return Guarantee(0.0, 0.0)
        totals = [self.dataset_total(n) for n in self.datasets]
        if any(t.epsilon is None for t in totals):
            return Guarantee(None, None)
        return max(totals, key=lambda t: (t.epsilon or 0.0, t.delta or 0.0))

    # -- the budget

    def admit(self, stage: str, planned: Spend, *, earlier: Sequence[Spend] = ()) -> None:
        """Refuse (PrivcompError) a stage whose planned spend (with its earlier releases, for a
        forced re-run) would pass the budget."""
        cap = self.budget.epsilon
        if cap is None or planned.kind == "post-processing":
            return
        trial = self._clone()
        trial.record(stage, planned, earlier=earlier)
        name = planned.dataset
        total = trial.dataset_total(name)
        if total.epsilon is None:
            raise PrivcompError(
                f"budget: stage '{stage}' reads private data '{name}' without DP, which no "
                f"finite budget (epsilon = {cap:g}) can pay for; refused before it runs"
            )
        if total.epsilon > cap:
            raise PrivcompError(
                f"budget: stage '{stage}' would bring epsilon on '{name}' to "
                f"{format_epsilon(total.epsilon, digits=4)} > budget {cap:g} "
                f"(delta {total.delta:.3g}); refused before it runs"
            )

    def _clone(self) -> Ledger:
        """A copy that records without touching this ledger or printing warnings."""
        trial = Ledger(self.budget)
        trial.entries = copy.deepcopy(self.entries)
        trial.warnings = list(self.warnings)
        trial.datasets = copy.deepcopy(self.datasets)
        trial.lineage = copy.deepcopy(self.lineage)
        trial.current = self.current
        return trial

    def to_dict(self) -> dict[str, Any]:
        datasets = {}
        for name, account in self.datasets.items():
            datasets[name] = {
                **asdict(account.guarantee()),
                "private": account.private,
                "history": [asdict(m) for m in account.history],
            }
        return {
            "stages": self.entries,
            "total": asdict(self.total()),
            "datasets": datasets,
            "budget": asdict(self.budget),
            "warnings": self.warnings,
        }

    @classmethod
    def replay(
        cls, records: Sequence[tuple[str, Spend]], *, budget: Budget | None = None
    ) -> Ledger:
        ledger = cls(budget)
        for stage, spend in records:
            ledger.record(stage, spend)
        return ledger


def replay_run(run_dir: Path, stages: Sequence[str], *, budget: Budget | None = None) -> Ledger:
    """The ledger of a finished run's first stages, rebuilt from their recorded results (for
    tools that study a run dir, e.g. benchmarks; a running stage reads ctx.ledger)."""
    records = []
    for position, name in enumerate(stages, start=1):
        data = read_json(run_dir / stage_dir_name(position, name) / "result.json")
        records.append((name, Spend.from_json(data["spend"])))
    return Ledger.replay(records, budget=budget)
