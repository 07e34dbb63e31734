"""The Opacus baseline: its printed epsilon is what an independent accountant says."""

from __future__ import annotations

from pathlib import Path

import pytest
from opacus.accountants import PRVAccountant

from models.zoo import seeded_model
from pipelines.config import Config
from pipelines.data import load_dataset, make_splits
from pipelines.progress import Reporter
from pipelines.runner import run_pipeline
from privacy.dpsgd import train_dpsgd
from privacy.ladp import LADPConfig


def test_dpsgd_epsilon_matches_a_fresh_accountant_and_the_target() -> None:
    data = load_dataset("digits")
    members = make_splits(len(data.y), seed=0)["members"]
    model = seeded_model("mlp", seed=0, in_shape=data.in_shape, num_classes=10, hidden=16)
    config = LADPConfig(epsilon=2.0, delta=1e-4, epochs=2, expected_batch_size=64)
    result = train_dpsgd(model, data.x[members], data.y[members], config=config, seed=0)
    spend = result.spend
    assert spend.sample_rate == pytest.approx(64 / len(members))
    assert spend.steps == round(2 / spend.sample_rate)
    fresh = PRVAccountant()
    fresh.history = [(spend.noise_multiplier, spend.sample_rate, spend.steps)]
    assert spend.epsilon == pytest.approx(fresh.get_epsilon(delta=1e-4))
    assert spend.epsilon <= 2.0


def test_train_dpsgd_stage_is_accounted_in_the_ledger(tmp_path: Path, tiny_config: Config) -> None:
    tiny_config["run"]["evaluate"] = "none"
    summary = run_pipeline(
        ["train-dpsgd"], config=tiny_config, run_dir=tmp_path, reporter=Reporter()
    )
    entry = summary["ledger"]["stages"][0]
    assert entry["mechanism"].startswith("dp-sgd")
    epsilon = summary["stages"][0]["privacy"]["epsilon"]
    assert epsilon is not None and 0 < epsilon <= tiny_config["train-dpsgd"]["epsilon"]
