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
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pipelines.errors import PrivcompError
from pipelines.rundir import read_json, stage_dir_name
from pipelines.settings.run import BudgetSettings
from pipelines.spend import DEFAULT_DATASET, Spend
from privacy.accounting import format_epsilon
from privacy.composition import Guarantee, Mechanism, compose

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
    neighbours: str | None = None  # the relation of every mechanism in the history

    def check_relation(self, spend: Spend, label: str) -> None:
        if self.neighbours not in (None, spend.neighbours):
            raise PrivcompError(
                f"stage '{label}' is accounted under {spend.neighbours} neighbours and what it "
                f"composes with under {self.neighbours}: one accountant cannot compose the two "
                "(a replace-one guarantee is two add/remove steps); refused"
            )

    def add(self, mechanism: Mechanism, spend: Spend, budget: Budget, label: str) -> None:
        self.check_relation(spend, label)
        self.neighbours = spend.neighbours
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
                mechanism = release.mechanism
                account = self.datasets.setdefault(name, _Account())
                account.add(mechanism, release, self.budget, stage)
                lineage.add(mechanism, release, self.budget, stage)
            extra = {
                "dataset": name,
                "neighbours": spend.neighbours,
                "spend": {"epsilon": spend.epsilon, "delta": spend.delta},
            }
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
            {
                "stage": stage,
                "kind": spend.kind,
                "lineage": spend.lineage,
                **own,
                **asdict(self.current),
                **extra,
            }
        )
        return self.current

    def record_elsewhere(self, label: str, spend: Spend) -> None:
        """A DP release of the members that this pipeline does not build on (another pipeline's
        stage in the same run dir): it counts in its data set's total, in no artifact's lineage."""
        name = spend.dataset
        account = self.datasets.setdefault(name, _Account())
        account.add(spend.mechanism, spend, self.budget, label)
        self.entries.append(
            {
                "stage": label,
                "kind": "earlier-release",
                "dataset": name,
                "neighbours": spend.neighbours,
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
        forced re-run) would pass the budget, or whose neighbour relation is not that of what it
        would compose with (with or without a budget: before the stage reads anything)."""
        if planned.kind == "dp":
            self.datasets.get(planned.dataset, _Account()).check_relation(planned, stage)
            if planned.lineage == "continue" and self.lineage is not None:
                self.lineage.check_relation(planned, stage)
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
                "neighbours": account.neighbours,
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
