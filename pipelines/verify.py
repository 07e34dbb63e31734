"""The runner's check that a stage spent what it was admitted for: the planned mechanism (same
kind, data set and lineage; the same δ, accountant, noise mode, engine and per-example source
where the plan names them; the same σ and q with no more steps, or the same RDP curve), with an
ε no larger than the plan's. A stage that ran another mechanism than the one the budget admitted
is a bug, and its result is refused."""

from __future__ import annotations

import math

from pipelines.spend import Spend
from privacy.composition import GaussianSteps

EPSILON_RTOL = 1e-9  # the accountant's report of fewer steps may differ in the last digits


def spend_problems(planned: Spend, spent: Spend) -> list[str]:
    """What differs between a plan and a spend (empty when the spend keeps to the plan)."""
    problems = [
        f"{name} {getattr(spent, name)!r} != planned {getattr(planned, name)!r}"
        for name in ("kind", "dataset", "lineage")
        if getattr(planned, name) != getattr(spent, name)
    ]
    if problems or planned.kind != "dp":
        return problems
    if spent.delta != planned.delta:
        problems.append(f"delta {spent.delta} != planned {planned.delta}")
    for key in ("accountant", "noise", "engine", "per_example"):
        if key in planned.details and spent.details.get(key) != planned.details[key]:
            problems.append(f"{key} {spent.details.get(key)!r} != planned {planned.details[key]!r}")
    plan, got = planned.mechanism, spent.mechanism
    if isinstance(plan, GaussianSteps) and isinstance(got, GaussianSteps):
        same = math.isclose(got.noise_multiplier, plan.noise_multiplier, rel_tol=1e-12)
        if not (same and math.isclose(got.sample_rate, plan.sample_rate, rel_tol=1e-12)):
            problems.append(f"ran σ, q = {got.noise_multiplier}, {got.sample_rate}, not {plan}")
        if got.steps > plan.steps:
            problems.append(f"steps {got.steps} > planned {plan.steps}")
    elif plan != got:
        problems.append(f"mechanism {got} != planned {plan}")
    cap, eps = planned.epsilon, spent.epsilon
    if cap is not None and (eps is None or eps > cap * (1 + EPSILON_RTOL)):
        problems.append(f"epsilon {eps} > planned {cap}")
    return problems


def check_spend_matches_plan(stage: str, planned: Spend, spent: Spend) -> None:
    problems = spend_problems(planned, spent)
    if problems:
        raise RuntimeError(f"stage '{stage}' spent another mechanism than admitted: {problems}")
