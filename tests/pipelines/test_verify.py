"""The runner refuses a stage whose spend is not the mechanism the budget admitted."""

from __future__ import annotations

from dataclasses import replace

import pytest

from pipelines.spend import POST_PROCESSING, Spend
from pipelines.verify import check_spend_matches_plan, spend_problems

PLAN = Spend(
    kind="dp",
    epsilon=3.0,
    delta=1e-5,
    details={
        "noise_multiplier": 1.1,
        "sample_rate": 0.1,
        "steps": 300,
        "accountant": "prv",
        "noise": "secure",
        "engine": "dp-sgd",
        "per_example": "opacus",
    },
)


def changed(**details: object) -> Spend:
    return replace(PLAN, details={**PLAN.details, **details})


def test_a_spend_that_keeps_to_its_plan_passes() -> None:
    assert spend_problems(PLAN, PLAN) == []
    assert spend_problems(PLAN, replace(changed(steps=120), epsilon=1.9)) == []  # stopped early
    assert spend_problems(POST_PROCESSING, POST_PROCESSING) == []


@pytest.mark.parametrize(
    ("spent", "problem"),
    [
        (changed(noise_multiplier=1.0), "ran σ"),
        (changed(sample_rate=0.2), "ran σ"),
        (changed(steps=301), "steps 301 > planned 300"),
        (replace(PLAN, epsilon=3.1), "epsilon 3.1 > planned 3.0"),
        (replace(PLAN, dataset="public"), "dataset"),
        (replace(PLAN, lineage="continue"), "lineage"),
        (replace(PLAN, neighbours="replace-one"), "neighbours 'replace-one'"),
        (Spend(kind="none"), "kind"),
        (replace(PLAN, delta=0.5), "delta 0.5 != planned 1e-05"),
        (changed(accountant="rdp"), "accountant 'rdp'"),
        (changed(noise="reproducible"), "noise 'reproducible'"),
        (changed(engine="ladp"), "engine 'ladp'"),
        (changed(per_example="privcomp"), "per_example 'privcomp'"),
        (replace(PLAN, details={"rdp_orders": [2.0], "rdp": [0.1]}), "mechanism"),
    ],
)
def test_another_mechanism_is_refused(spent: Spend, problem: str) -> None:
    assert any(problem in p for p in spend_problems(PLAN, spent))
    with pytest.raises(RuntimeError, match="spent another mechanism than admitted"):
        check_spend_matches_plan("train-ladp", PLAN, spent)


def test_a_spend_says_a_lineage_that_fits_its_kind() -> None:
    with pytest.raises(ValueError, match="post-processing keeps its input's lineage"):
        Spend(kind="dp", epsilon=1.0, delta=1e-5, lineage="keep")
    with pytest.raises(ValueError, match="post-processing keeps its input's lineage"):
        Spend(kind="post-processing", lineage="new")
