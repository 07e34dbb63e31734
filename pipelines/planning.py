"""Planning a pipeline before anything runs: the stages exist and follow each other, and what
they will spend fits the budget.

Every stage plans its own spend (Stage.planned_spend) against the ledger so far; here that ledger
is a trial one that records the plans, so a stage's plan sees the plans before it (a DP
fine-tune calibrates σ for the lineage its input will have). The runner plans each stage again
against the live ledger, which also holds earlier releases from the run dir, and admits it.
"""

from __future__ import annotations

from dataclasses import replace

from pipelines.config import Config
from pipelines.context import RunContext
from pipelines.errors import PrivcompError
from pipelines.ledger import Budget, Ledger
from pipelines.stage import Stage
from pipelines.stages import STAGES


def plan(names: list[str], config: Config) -> list[Stage]:
    """Resolve stage names and check that every requirement is provided by an earlier stage."""
    if not names:
        raise PrivcompError("no stages given (see `pipeline stages`)")
    available = {"splits"}
    stages: list[Stage] = []
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
        stages.append(cls(config.section(cls.Config.name)))
    return stages


def check_budget(stages: list[Stage], ctx: RunContext) -> Ledger:
    """Plan and admit every stage in order on a trial ledger; PrivcompError when a plan cannot
    work (the budget, a DP fine-tune of a model that is not private, ...). Returns the ledger."""
    ledger = Ledger(Budget.from_settings(ctx.config.budget))
    for position, stage in enumerate(stages, start=1):
        trial = replace(ctx, ledger=ledger, position=position)
        planned = stage.planned_spend(trial)
        ledger.admit(stage.name, planned)
        ledger.record(stage.name, planned)
    return ledger
