"""The runner's check that a stage spent what it was admitted for: the planned mechanism (same
kind, data set, lineage and neighbour relation; the same δ, accountant, noise mode, engine and
per-example source where the plan names them; the same σ and q with no more steps, or the same
RDP curve), with an ε no larger than the plan's. A stage that ran another mechanism than the one
the budget admitted is a bug, and its result is refused."""

from __future__ import annotations

import math

from pipelines.spend import Spend
from privacy.composition import GaussianSteps, Mechanism, Opaque, Parallel

EPSILON_RTOL = 1e-9  # the accountant's report of fewer steps may differ in the last digits


def spend_problems(planned: Spend, spent: Spend) -> list[str]:
    """What differs between a plan and a spend (empty when the spend keeps to the plan)."""
    problems = [
        f"{name} {getattr(spent, name)!r} != planned {getattr(planned, name)!r}"
        for name in ("kind", "dataset", "lineage", "neighbours")
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
    elif isinstance(plan, Parallel) and isinstance(got, Parallel):
        problems.extend(_parallel_problems(plan, got))
    elif isinstance(plan, Opaque) and isinstance(got, Opaque):
        if got.epsilon > plan.epsilon * (1 + EPSILON_RTOL) or got.delta > plan.delta:
            problems.append(f"ran {got}, more than planned {plan}")
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


def _parallel_problems(plan: Parallel, got: Parallel) -> list[str]:
    """Federated clients: the same number of parts, each no more than its planned steps."""
    if len(plan.parts) != len(got.parts):
        return [f"{len(got.parts)} parallel parts, planned {len(plan.parts)}"]
    problems = []
    for k, (planned, ran) in enumerate(zip(plan.parts, got.parts, strict=True)):
        for step in ran:
            if not any(_within(step, p) for p in planned):
                problems.append(f"part {k} ran {step}, not within {planned}")
    return problems


def _within(got: Mechanism, plan: Mechanism) -> bool:
    if not (isinstance(got, GaussianSteps) and isinstance(plan, GaussianSteps)):
        return got == plan
    return (
        math.isclose(got.noise_multiplier, plan.noise_multiplier, rel_tol=1e-12)
        and math.isclose(got.sample_rate, plan.sample_rate, rel_tol=1e-12)
        and got.steps <= plan.steps
    )
