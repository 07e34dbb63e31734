"""The privacy ledger: one accountant history per data set, lineages, not-private, the budget."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console

from pipelines.config import Config, load_config
from pipelines.context import RunContext
from pipelines.data import load_dataset, make_splits
from pipelines.errors import PrivcompError
from pipelines.ledger import Budget, Ledger
from pipelines.planning import check_budget, plan
from pipelines.progress import Reporter
from pipelines.stage import POST_PROCESSING, Spend
from privacy.composition import GaussianSteps, Opaque, compose
from privacy.pate import PATEConfig, pate_spend
from tests.conftest import TINY

DELTA = 1e-5
LADP = (1.1, 0.1, 200)  # σ, q, steps
FINETUNE = (2.0, 0.1, 20)


def prv(history: list[tuple[float, float, int]], delta: float = DELTA) -> float:
    from opacus.accountants import PRVAccountant

    accountant = PRVAccountant()
    accountant.history = list(history)
    with np.errstate(divide="ignore"):  # q = 1 (PATE) takes log(0) on purpose
        return float(accountant.get_epsilon(delta=delta))


def dp(
    sigma: float,
    q: float,
    steps: int,
    *,
    eps: float | None = None,
    lineage: str = "new",
    dataset: str = "members",
    **extra: object,
) -> Spend:
    details = {"noise_multiplier": sigma, "sample_rate": q, "steps": steps, "accountant": "prv"}
    epsilon = prv([(sigma, q, steps)]) if eps is None else eps
    return Spend(
        kind="dp",
        epsilon=epsilon,
        delta=DELTA,
        dataset=dataset,
        lineage=lineage,
        details={**details, **extra},
    )


def test_a_single_spend_is_reported_as_its_own_accountant_says() -> None:
    ledger = Ledger()
    spend = dp(*LADP)
    g = ledger.record("train-ladp", spend)
    assert (g.epsilon, g.delta, g.accountant) == (spend.epsilon, DELTA, "prv")
    assert ledger.record("prune", POST_PROCESSING) == g
    entry = ledger.to_dict()["stages"][0]
    assert entry["epsilon"] == spend.epsilon and entry["noise_multiplier"] == LADP[0]
    assert [e["lineage"] for e in ledger.to_dict()["stages"]] == ["new", "keep"]


def test_dp_fine_tune_continues_the_same_accountant_history() -> None:
    ledger = Ledger()
    first = ledger.record("train-ladp", dp(*LADP))
    second = ledger.record("prune", dp(*FINETUNE, lineage="continue", dataset="members"))
    assert second.epsilon == pytest.approx(prv([LADP, FINETUNE]), rel=1e-9)
    assert first.epsilon is not None and second.epsilon > first.epsilon
    # One accountant over the whole history is tighter than adding the two ε's.
    assert second.epsilon < first.epsilon + prv([FINETUNE])
    assert ledger.total() == second
    history = ledger.to_dict()["datasets"]["members"]["history"]
    assert [tuple(h.values()) for h in history] == [LADP, FINETUNE]


def test_a_new_training_starts_a_new_lineage_but_the_total_composes_both() -> None:
    ledger = Ledger()
    ledger.record("train-ladp", dp(*LADP))
    pate = pate_spend(PATEConfig(sigma=20.0, queries=100))
    student = ledger.record(
        "distill",
        Spend("dp", pate.epsilon, pate.delta, details=pate.to_dict()),
    )
    assert student.epsilon == pytest.approx(pate.epsilon)  # its own RDP bound
    assert student.accountant == "rdp"
    gnmax = (pate.noise_multiplier, 1.0, 100)
    total = ledger.total()
    assert total.epsilon == pytest.approx(prv([LADP, gnmax]), rel=1e-9)
    assert total.accountant == "prv"  # the data set's first accountant
    assert total.epsilon is not None and total.epsilon < prv([LADP]) + pate.epsilon


def test_reading_private_data_without_dp_is_not_private_and_loud() -> None:
    said: list[str] = []
    ledger = Ledger(warn=said.append)
    ledger.record("train-ladp", dp(*LADP))
    calibration = Spend(kind="none", lineage="continue")
    g = ledger.record("quantize", calibration)
    assert (g.epsilon, g.delta) == (None, None)
    assert ledger.total().epsilon is None
    assert ledger.record("export", POST_PROCESSING).epsilon is None  # stays not private
    assert len(said) == 1 and "NOT private" in said[0] and "quantize" in said[0]
    data = ledger.to_dict()
    assert data["warnings"] and data["stages"][1]["warning"]
    assert data["datasets"]["members"]["private"] is False
    json.dumps(data)  # the run directory's ledger.json


def test_spends_under_different_neighbour_relations_are_refused_not_composed() -> None:
    replace_one = Spend(
        "dp",
        1.0,
        DELTA,
        lineage="continue",
        details=dp(*FINETUNE).details,
        neighbours="replace-one",
    )
    ledger = Ledger()
    ledger.record("train-ladp", dp(*LADP))
    # Refused before the stage runs, with or without a budget, and when it records.
    with pytest.raises(PrivcompError, match="'prune' is accounted under replace-one neighbours"):
        ledger.admit("prune", replace_one)
    with pytest.raises(PrivcompError, match="'prune' is accounted under replace-one neighbours"):
        ledger.record("prune", replace_one)
    # A new lineage on the same members still composes into their total: refused too.
    with pytest.raises(PrivcompError, match="under add/remove"):
        ledger.record("distill", Spend("dp", 1.0, DELTA, neighbours="replace-one"))
    with pytest.raises(PrivcompError, match="under add/remove"):
        ledger.record_elsewhere("train (another pipeline)", replace_one)
    # Another data set is its own history: nothing to mix.
    other = Spend("dp", 1.0, DELTA, dataset="public-ish", neighbours="replace-one")
    assert ledger.record("train", other).epsilon == 1.0
    data = ledger.to_dict()
    assert data["datasets"]["members"]["neighbours"] == "add/remove"
    assert data["datasets"]["public-ish"]["neighbours"] == "replace-one"
    assert data["stages"][0]["neighbours"] == "add/remove"


def test_a_spend_names_a_known_neighbour_relation_and_keeps_it_in_json() -> None:
    with pytest.raises(ValueError, match="unknown neighbour relation 'swap'"):
        Spend("dp", 1.0, DELTA, neighbours="swap")
    spend = Spend("dp", 1.0, DELTA, neighbours="replace-one")
    assert Spend.from_json(spend.to_json()) == spend
    older = {k: v for k, v in dp(*LADP).to_json().items() if k != "neighbours"}
    assert Spend.from_json(older).neighbours == "add/remove"  # run dirs before it was written


def test_post_processing_without_an_artifact_is_an_error() -> None:
    with pytest.raises(ValueError, match="no stage produced"):
        Ledger().record("prune", POST_PROCESSING)
    with pytest.raises(ValueError, match="no stage produced"):
        Ledger().record("prune", dp(*FINETUNE, lineage="continue"))


def test_a_spend_known_only_by_epsilon_delta_is_composed_with_the_lineage() -> None:
    ledger = Ledger()
    ledger.record("train-ladp", dp(*LADP))
    g = ledger.record("other", Spend("dp", 0.5, 1e-6, lineage="continue"))
    expected = compose([GaussianSteps(*LADP), Opaque(0.5, 1e-6)], delta=DELTA)
    assert (g.epsilon, g.delta) == (expected.epsilon, expected.delta)


# ---- the budget, before anything runs -------------------------------------------------------


def context(tmp_path: Path, *overrides: str) -> tuple[RunContext, Config]:
    """The runner's context on digits; RDP keeps the planning's calibrations in milliseconds."""
    config = load_config(None, [*TINY, 'train-ladp.accountant="rdp"', *overrides])
    data = load_dataset("digits")
    splits = make_splits(len(data.y), seed=0, fractions=config.data.fractions())
    reporter = Reporter(Console(file=io.StringIO()))
    return RunContext(tmp_path, config, data, splits, reporter), config


def test_budget_refuses_a_run_whose_stages_would_exceed_it(tmp_path: Path) -> None:
    names = ["train-ladp", "prune", "quantize", "evaluate"]
    ctx, config = context(tmp_path, "budget.epsilon=3.0")  # train-ladp plans epsilon = 4
    with pytest.raises(PrivcompError, match=r"budget: stage 'train-ladp' .* > budget 3"):
        check_budget(plan(names, config), ctx)
    assert list(tmp_path.iterdir()) == []  # nothing written
    ctx, config = context(tmp_path, "budget.epsilon=4.5")
    planned = check_budget(plan(names, config), ctx)
    assert planned is not None and planned.total().epsilon == pytest.approx(4.0, abs=0.05)


def test_budget_counts_a_dp_fine_tune_against_the_total(tmp_path: Path) -> None:
    names = ["train-ladp", "prune"]
    ladp_fine_tune = ['prune.finetune="ladp"', "prune.finetune_epsilon=5.0"]
    ctx, config = context(tmp_path, "budget.epsilon=4.5", *ladp_fine_tune)
    with pytest.raises(PrivcompError, match="finetune_epsilon = 5 is above budget"):
        for stage in plan(names, config):
            stage.check(ctx)
    ctx, config = context(tmp_path, "budget.epsilon=6.0", *ladp_fine_tune)
    planned = check_budget(plan(names, config), ctx)
    assert planned is not None
    assert planned.total().epsilon == pytest.approx(5.0, rel=0.01)  # calibrated to its target


def test_budget_refuses_reading_private_data_without_dp(tmp_path: Path) -> None:
    ctx, config = context(tmp_path, "budget.epsilon=10.0")
    with pytest.raises(PrivcompError, match="'train' reads private data 'members' without DP"):
        check_budget(plan(["train", "prune"], config), ctx)
    private_calibration = [
        'quantize.calibration="members"',
        "quantize.allow_private_calibration=true",
    ]
    ctx, config = context(tmp_path, "budget.epsilon=10.0", *private_calibration)
    with pytest.raises(PrivcompError, match="'quantize' reads private data"):
        check_budget(plan(["train-ladp", "quantize"], config), ctx)
    ctx, config = context(tmp_path, *private_calibration)  # no cap: allowed (and loud later)
    planned = check_budget(plan(["train-ladp", "quantize"], config), ctx)
    assert planned.total().epsilon is None and planned.warnings


def test_no_cap_plans_every_stage_and_refuses_nothing(tmp_path: Path) -> None:
    ctx, config = context(tmp_path)
    planned = check_budget(plan(["train-ladp", "prune", "quantize"], config), ctx)
    assert [e["stage"] for e in planned.entries] == ["train-ladp", "prune", "quantize"]
    assert Budget.from_settings(config.budget) == Budget(None, None)
    with pytest.raises(PrivcompError, match="budget.epsilon"):
        load_config(None, ["budget.epsilon=-1.0"])


def test_admit_refuses_one_stage_over_budget() -> None:
    ledger = Ledger(Budget(epsilon=prv([LADP]) + 0.01))
    ledger.record("train-ladp", dp(*LADP))
    ledger.admit("prune", POST_PROCESSING)
    with pytest.raises(PrivcompError, match="refused before it runs"):
        ledger.admit("prune", dp(*FINETUNE, lineage="continue"))
    assert len(ledger.entries) == 1  # admit never records


def test_budget_delta_is_the_delta_of_every_composition() -> None:
    ledger = Ledger(Budget(delta=1e-6))
    g = ledger.record("train-ladp", dp(*LADP))  # spent at 1e-5, reported at 1e-6
    assert g.delta == 1e-6 and g.epsilon == pytest.approx(prv([LADP], 1e-6), rel=1e-9)
