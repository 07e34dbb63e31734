"""data.canaries end to end: a tiny run whose summary.json and metrics.json carry each attack's
metrics on the canaries beside the population average, a resume that sees the same canaries, and
nothing of the canaries in what ships."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipelines.config import Config, load_config
from pipelines.data import Splits, load_dataset
from pipelines.findings import findings, headline
from pipelines.progress import Reporter
from pipelines.runner import run_pipeline
from tests.conftest import TINY

CANARIES = [*TINY, "train.epochs=20", "data.canaries=20", 'evaluate.attacks=["loss", "lira"]']
KEYS = {"auc", "auc_ci", "tpr_at_1pct_fpr", "tpr_at_0_1pct_fpr", "n_members", "n_nonmembers"}


@pytest.fixture(scope="module")
def canary_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, Config]:
    config = load_config(None, CANARIES)
    run_dir = tmp_path_factory.mktemp("canaries") / "run"
    summary = run_pipeline(["train"], config=config, run_dir=run_dir, reporter=Reporter())
    return run_dir, summary, config


def test_summary_and_metrics_carry_canary_metrics(canary_run: tuple[Path, dict, Config]) -> None:
    run_dir, summary, _ = canary_run
    (row,) = summary["stages"]
    assert set(row["attacks"]) == {"loss", "lira"}
    for metrics in row["attacks"].values():
        assert metrics["n_members"] == metrics["n_nonmembers"] == 60  # evaluate.samples
        assert set(metrics["canaries"]) >= KEYS
        assert metrics["canaries"]["n_members"] == metrics["canaries"]["n_nonmembers"] == 20
        assert "canaries" not in metrics["canaries"] and "roc" not in metrics["canaries"]
    on_disk = json.loads((run_dir / "summary.json").read_text())
    assert on_disk["stages"][0]["attacks"] == row["attacks"]
    measured = json.loads((run_dir / "01-train" / "metrics.json").read_text())
    assert measured["attacks"] == row["attacks"]
    assert set(measured["roc"]["lira"]["canaries"]) == {"fpr", "tpr"}
    # A mislabelled member is memorised: the canaries are easier than the average record.
    loss = row["attacks"]["loss"]
    assert loss["canaries"]["auc"] > loss["auc"]


def test_splits_json_records_the_canaries_and_a_resume_sees_them(
    canary_run: tuple[Path, dict, Config],
) -> None:
    run_dir, summary, config = canary_run
    splits = Splits.from_json((run_dir / "splits.json").read_text())
    canaries = splits.canaries
    assert canaries is not None and len(canaries.members) == len(canaries.nonmembers) == 20
    assert set(canaries.members.tolist()) <= set(splits["members"].tolist())
    assert set(canaries.nonmembers.tolist()) <= set(splits["nonmembers"].tolist())
    assert (canaries.labels != load_dataset("digits").y[canaries.indices]).all()
    before = (run_dir / "splits.json").read_text()
    again = run_pipeline(["train"], config=config, run_dir=run_dir, reporter=Reporter())
    assert (run_dir / "splits.json").read_text() == before
    assert again["stages"][0]["attacks"] == summary["stages"][0]["attacks"]
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["stages"][0]["status"] == "done"


def test_what_ships_takes_the_population_numbers_only() -> None:
    """The strongest attack (the ONNX metadata's, the table's) reads the population; the
    canaries' numbers stay in the run dir."""
    weak = {"fpr": [0.0, 0.01, 1.0], "tpr": [0.0, 0.01, 1.0]}
    strong = {"fpr": [0.0, 0.01, 1.0], "tpr": [0.0, 0.9, 1.0]}
    sizes = {"n_members": 500, "n_nonmembers": 500}
    attacks = {"loss": {**sizes, "canaries": {"n_members": 64, "n_nonmembers": 64}}}
    found = findings(attacks, {"loss": {**weak, "canaries": strong}}, None, None)
    shipped = headline(found)
    assert shipped is not None and shipped["tpr"] == 0.01 and not shipped["beats_chance"]
    assert found["canaries"]["strongest"]["0.01"]["tpr"] == 0.9
