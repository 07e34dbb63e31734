"""The DP-SGD baseline: Opacus's per-example gradients clipped flat, on privcomp's engine (secure
sampling and noise); its printed epsilon is what an independent accountant says."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch
from opacus.accountants import PRVAccountant

from models.zoo import seeded_model
from pipelines.config import Config
from pipelines.data import load_dataset, make_splits
from pipelines.errors import PrivcompError
from pipelines.progress import Reporter
from pipelines.runner import run_pipeline
from pipelines.settings.training import DPTrainingSettings
from privacy import engines
from privacy.clipping import auto_clipped_sums, clipped_grad_sums
from privacy.config import LADPConfig
from privacy.dpsgd import dpsgd_engine, flat_group, opacus_clipped_sums
from privacy.engines import build_engine
from privacy.ladp import LADPEngine


def test_dpsgd_epsilon_matches_a_fresh_accountant_and_the_target() -> None:
    data = load_dataset("digits")
    members = make_splits(len(data.y), seed=0)["members"]
    model = seeded_model("mlp", seed=0, in_shape=data.in_shape, num_classes=10, hidden=16)
    config = LADPConfig(epsilon=2.0, delta=1e-4, epochs=2, expected_batch_size=64)
    result = dpsgd_engine(model, data.x[members], data.y[members], config=config, seed=0).run()
    spend = result.spend
    assert spend.noise == "secure" and result.noise_seed is None
    assert spend.sample_rate == pytest.approx(64 / len(members))
    assert spend.steps == round(2 / spend.sample_rate)
    fresh = PRVAccountant()
    fresh.history = [(spend.noise_multiplier, spend.sample_rate, spend.steps)]
    assert spend.epsilon == pytest.approx(fresh.get_epsilon(delta=1e-4))
    assert spend.epsilon <= 2.0


def test_train_dpsgd_stage_is_accounted_in_the_ledger(tmp_path: Path, tiny_config: Config) -> None:
    summary = run_pipeline(
        ["train-dpsgd"],
        config=tiny_config.with_values("run", evaluate="none"),
        run_dir=tmp_path,
        reporter=Reporter(),
    )
    entry = summary["ledger"]["stages"][0]
    assert entry["mechanism"].startswith("dp-sgd")
    epsilon = summary["stages"][0]["privacy"]["epsilon"]
    assert epsilon is not None and 0 < epsilon <= tiny_config.train_dpsgd.epsilon


def test_opacus_flat_clipping_equals_the_reference_path() -> None:
    """One group of every parameter, clipped at C: Opacus's per-sample gradients give the same
    clipped sum as privcomp's vmap reference (an independent implementation of each)."""
    data = load_dataset("digits")
    model = seeded_model("cnn", seed=0, in_shape=data.in_shape, num_classes=10, width=8, hidden=32)
    x, y = torch.as_tensor(data.x[:40]), torch.as_tensor(data.y[:40])
    group = [flat_group(model, clip_norm=0.5)]
    ours, theirs = clipped_grad_sums(model, x, y, group), opacus_clipped_sums(model, x, y, group)
    for name, value in ours.items():
        torch.testing.assert_close(theirs[name], value, rtol=1e-4, atol=1e-6)
    assert not any(
        hasattr(p, "grad_sample") and p.grad_sample is not None for p in model.parameters()
    )


def test_per_example_source_picks_the_clipped_sums() -> None:
    data = load_dataset("digits")
    x, y = data.x[:50], data.y[:50]
    model = seeded_model("cnn", seed=0, in_shape=data.in_shape, num_classes=10, width=4, hidden=8)
    config = LADPConfig(epsilon=2.0, delta=1e-3, epochs=1, expected_batch_size=16)
    assert dpsgd_engine(model, x, y, config=config, seed=0).clipped_sums is opacus_clipped_sums
    privcomp = replace(config, per_example="privcomp")
    engine = build_engine("dp-sgd", model, x, y, config=privcomp, seed=0)
    assert engine.clipped_sums is auto_clipped_sums and len(engine.groups) == 1
    assert engine.groups[0].weight == 1.0 and engine.groups[0].clip_norm == config.clip_norm
    with pytest.raises(ValueError, match="unknown per_example 'jax'"):
        LADPConfig(per_example="jax").check(50)


def test_train_dpsgd_per_example_reaches_the_engine_ledger_and_references(
    tmp_path: Path, tiny_config: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    """[train-dpsgd] per_example = "privcomp": the stage's engine, its planned and spent details
    (the runner checks they agree) and the settings references and the audit rebuild from."""
    with pytest.raises(PrivcompError, match="train-dpsgd.per_example must be one of"):
        tiny_config.with_values("train-dpsgd", per_example="jax")
    config = tiny_config.with_values("run", evaluate="none").with_values(
        "train-dpsgd", per_example="privcomp"
    )
    built: list[object] = []

    def recording(*args: Any, **kwargs: Any) -> LADPEngine:
        engine = dpsgd_engine(*args, **kwargs)
        built.append(engine.clipped_sums)
        return engine

    monkeypatch.setattr(engines, "dpsgd_engine", recording)  # build_engine's, by name
    summary = run_pipeline(["train-dpsgd"], config=config, run_dir=tmp_path, reporter=Reporter())
    assert built == [auto_clipped_sums]
    entry = summary["ledger"]["stages"][0]
    assert entry["engine"] == "dp-sgd" and entry["per_example"] == "privcomp"
    section = config.section("train-dpsgd")
    assert isinstance(section, DPTrainingSettings)
    released = section.space().released_settings(entry)
    assert LADPConfig.from_settings(released).per_example == "privcomp"
