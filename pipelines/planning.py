"""Planning a pipeline before anything runs: the stages exist and follow each other, and what
they will spend fits the budget.

Every stage plans its own spend (Stage.planned_spend) against the ledger so far; here that ledger
is a trial one that records the plans, so a stage's plan sees the plans before it (a DP
fine-tune calibrates σ for the lineage its input will have). The runner plans each stage again
against the live ledger, which also holds earlier releases from the run dir, and admits it.
"""

from __future__ import annotations

import warnings
from dataclasses import replace

import numpy as np
import torch

from models.zoo import seeded_model
from pipelines.config import Config
from pipelines.context import RunContext
from pipelines.errors import PrivcompError
from pipelines.evaluation import candidate_pool
from pipelines.ledger import Budget, Ledger
from pipelines.releases import ReleaseLog
from pipelines.rundir import stage_dir_name
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
    work (the budget, a DP fine-tune of a model that is not private, ...). The run dir's DP
    releases count as they will when the run comes to them: another pipeline's in the total, a
    stage's own as its spend (it is reused, or run again with them composed). Returns the
    ledger."""
    ledger = Ledger(Budget.from_settings(ctx.config.budget))
    releases = ReleaseLog(ctx.run_dir).counted(ctx.run_dir)
    pipeline = {(position, stage.name) for position, stage in enumerate(stages, start=1)}
    for release in releases:
        if (release.position, release.stage) not in pipeline:
            label = stage_dir_name(release.position, release.stage)
            ledger.record_elsewhere(label, release.spend)
    for position, stage in enumerate(stages, start=1):
        own = [r.spend for r in releases if (r.position, r.stage) == (position, stage.name)]
        if own:
            planned, earlier = own[-1], own[:-1]
        else:
            planned, earlier = (
                stage.planned_spend(replace(ctx, ledger=ledger, position=position)),
                [],
            )
        ledger.admit(stage.name, planned, earlier=earlier)
        ledger.record(stage.name, planned, earlier=earlier)
    return ledger


def check_run(stages: list[Stage], ctx: RunContext) -> None:
    """What every run needs and only the data can tell, before anything is written: the
    configured model builds and takes one example of the data set (training stages, PATE's
    teachers and the references all build it), and the attacks have an evaluation pair and a
    population when any stage will be attacked."""
    arch = ctx.model_arch()
    kwargs = {**arch["kwargs"], "in_shape": tuple(arch["kwargs"]["in_shape"])}
    example = torch.as_tensor(np.zeros((1, *ctx.dataset.in_shape), dtype=np.float32))
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # torch warns of empty layers before it fails
            seeded_model(arch["name"], seed=0, **kwargs).eval()(example)
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        reason = " ".join(str(exc).split())
        where = f"model '{arch['name']}' with {ctx.config.model}"
        raise PrivcompError(f"cannot build {where}: {reason}") from exc
    attacked = ctx.config.run.evaluate != "none" or any(s.audit_attacks for s in stages)
    if attacked:
        candidate_pool(ctx)  # one-line errors for too few members/non-members or no population
