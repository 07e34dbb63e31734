"""The runner's check that a stage spent what it was admitted for: the planned mechanism (same
kind, data set, lineage, σ and q; no more steps), with an ε no larger than the plan's. A stage that
ran another mechanism than the one the budget admitted is a bug, and its result is refused."""

from __future__ import annotations

import math

from pipelines.spend import Spend

MECHANISM_KEYS = ("noise_multiplier", "sample_rate")
EPSILON_RTOL = 1e-9  # the accountant's report of fewer steps may differ in the last digits


def check_spend_matches_plan(stage: str, planned: Spend, spent: Spend) -> None:
    problems = []
    for field in ("kind", "dataset", "lineage"):
        if getattr(planned, field) != getattr(spent, field):
            problems.append(
                f"{field} {getattr(spent, field)!r} != planned {getattr(planned, field)!r}"
            )
    if planned.kind == "dp" and spent.kind == "dp":
        plan, got = planned.details, spent.details
        for key in MECHANISM_KEYS:
            if key in plan and not math.isclose(float(got.get(key, math.nan)), float(plan[key])):
                problems.append(f"{key} {got.get(key)} != planned {plan[key]}")
        if "steps" in plan and int(got.get("steps", math.inf)) > int(plan["steps"]):
            problems.append(f"steps {got.get('steps')} > planned {plan['steps']}")
        if plan.get("rdp") is not None and got.get("rdp") != plan["rdp"]:
            problems.append("its RDP curve differs from the planned one")
        eps, cap = spent.epsilon, planned.epsilon
        if cap is not None and (eps is None or eps > cap * (1 + EPSILON_RTOL)):
            problems.append(f"epsilon {eps} > planned {cap}")
    if problems:
        raise RuntimeError(
            f"stage '{stage}' spent another mechanism than admitted: " + "; ".join(problems)
        )
