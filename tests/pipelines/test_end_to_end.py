"""The main command on tiny data: every stage, the run directory contract, resume."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from pipelines.config import Config
from pipelines.errors import PrivcompError
from pipelines.progress import Reporter
from pipelines.runner import run_pipeline
from privacy.accounting import compute_epsilon

MAIN = ["train-ladp", "prune", "quantize", "evaluate"]
ATTACK_KEYS = {
    "auc",
    "balanced_accuracy",
    "tpr_at_1pct_fpr",
    "tpr_at_0_1pct_fpr",
    "auc_ci",
    "epsilon_lower_bound",
}


@pytest.fixture(scope="module")
def main_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, Config]:
    from pipelines.config import load_config
    from tests.conftest import TINY

    config = load_config(None, TINY)
    run_dir = tmp_path_factory.mktemp("run")
    summary = run_pipeline(MAIN, config=config, run_dir=run_dir, reporter=Reporter())
    return run_dir, summary, config


def test_run_directory_contract(main_run: tuple[Path, dict, Config]) -> None:
    run_dir, _, _ = main_run
    for name in ("config.toml", "splits.json", "manifest.json", "ledger.json", "summary.json"):
        assert (run_dir / name).is_file(), name
    assert (run_dir / "01-train-ladp" / "model.safetensors").is_file()
    assert (run_dir / "01-train-ladp" / "arch.json").is_file()
    assert (run_dir / "03-quantize" / "model.int8.onnx").is_file()
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert [s["name"] for s in manifest["stages"]] == MAIN
    assert all(s["status"] == "done" for s in manifest["stages"])


def test_summary_has_every_stage_with_the_design_keys(main_run: tuple[Path, dict, Config]) -> None:
    _, summary, config = main_run
    assert set(summary["run"]) >= {"dataset", "model", "seed", "version"}
    # One row per artifact: the evaluate stage's audit joins the row of the artifact it attacked.
    assert [s["name"] for s in summary["stages"]] == [n for n in MAIN if n != "evaluate"]
    for stage in summary["stages"]:
        assert set(stage) >= {
            "name",
            "artifact",
            "seconds",
            "privacy",
            "utility",
            "size",
            "attacks",
        }
        audited = stage is summary["stages"][-1]
        extra = config.evaluate.audit_attacks if audited else []
        assert set(stage["attacks"]) == {*config.evaluate.attacks, *extra}
        assert {"loss", "shadow", "lira", "rmia"} <= set(stage["attacks"])
        for metrics in stage["attacks"].values():
            assert set(metrics) >= ATTACK_KEYS


def test_epsilon_is_finite_and_unchanged_by_post_processing(
    main_run: tuple[Path, dict, Config],
) -> None:
    _, summary, config = main_run
    epsilons = [s["privacy"]["epsilon"] for s in summary["stages"]]
    assert epsilons[0] is not None and 0 < epsilons[0] <= config.train_ladp.epsilon
    assert epsilons == [epsilons[0]] * len(epsilons)


def test_ledger_epsilon_is_what_an_independent_accountant_says(
    main_run: tuple[Path, dict, Config],
) -> None:
    from opacus.accountants import PRVAccountant

    run_dir, summary, _ = main_run
    spend = json.loads((run_dir / "ledger.json").read_text())["stages"][0]
    accountant = PRVAccountant()
    accountant.history = [(spend["noise_multiplier"], spend["sample_rate"], spend["steps"])]
    assert spend["epsilon"] == pytest.approx(accountant.get_epsilon(delta=spend["delta"]))
    assert summary["stages"][0]["privacy"]["epsilon"] == spend["epsilon"]
    recomputed = compute_epsilon(
        noise_multiplier=spend["noise_multiplier"],
        sample_rate=spend["sample_rate"],
        steps=spend["steps"],
        delta=spend["delta"],
    )
    assert spend["epsilon"] == pytest.approx(recomputed)


def test_compression_really_shrinks(main_run: tuple[Path, dict, Config]) -> None:
    _, summary, _ = main_run
    trained, pruned, quantized = summary["stages"][:3]
    assert pruned["size"]["params"] < trained["size"]["params"]
    assert 0 < pruned["size"]["macs"] < trained["size"]["macs"]
    assert pruned["size"]["bytes"] < trained["size"]["bytes"]
    assert quantized["artifact"].endswith(".onnx")
    # The one-third ratio needs real layer sizes (tests/compress checks it on the 28x28 cnn); this
    # tiny model is dominated by the graph's fixed overhead, so only "smaller" is asserted here.
    assert quantized["size"]["bytes"] < pruned["size"]["bytes"]


def test_rerun_reuses_every_stage(main_run: tuple[Path, dict, Config]) -> None:
    run_dir, summary, config = main_run
    again = run_pipeline(MAIN, config=config, run_dir=run_dir, reporter=Reporter())
    assert again["stages"] == summary["stages"]


def test_a_run_dir_resumes_on_another_executor(main_run: tuple[Path, dict, Config]) -> None:
    """How the work is spread is no part of the configuration: every stage is reused and the
    run dir's config.toml is kept."""
    run_dir, summary, config = main_run
    before = (run_dir / "config.toml").read_text()
    other = config.with_values("run", executor="serial", workers=1, ray_address="auto")
    other = other.with_values("train-fl", workers=3)
    again = run_pipeline(MAIN, config=other, run_dir=run_dir, reporter=Reporter())
    assert again["stages"] == summary["stages"]
    assert (run_dir / "config.toml").read_text() == before


def test_a_run_dir_with_a_damaged_config_or_split_is_refused_and_kept(
    main_run: tuple[Path, dict, Config], tmp_path: Path
) -> None:
    run_dir, _, config = main_run
    damaged = tmp_path / "damaged"
    shutil.copytree(run_dir, damaged)
    (damaged / "config.toml").write_text("[run\n")
    before = (damaged / "summary.json").read_text()
    with pytest.raises(PrivcompError, match="config.toml is not valid TOML"):
        run_pipeline(MAIN, config=config, run_dir=damaged, reporter=Reporter())
    assert (damaged / "summary.json").read_text() == before
    assert (damaged / "config.toml").read_text() == "[run\n"
    shutil.copy(run_dir / "config.toml", damaged / "config.toml")
    (damaged / "splits.json").write_text('{"seed": 0}')
    with pytest.raises(PrivcompError, match="splits.json is damaged"):
        run_pipeline(MAIN, config=config, run_dir=damaged, reporter=Reporter())
    assert (damaged / "splits.json").read_text() == '{"seed": 0}'
    assert (damaged / "summary.json").read_text() == before


def test_a_run_dir_with_another_config_is_refused_and_kept(
    main_run: tuple[Path, dict, Config],
) -> None:
    run_dir, _, config = main_run
    before = (run_dir / "summary.json").read_text()
    other = config.with_values("prune", ratio=0.25)
    with pytest.raises(PrivcompError, match="different configuration"):
        run_pipeline(MAIN, config=other, run_dir=run_dir, reporter=Reporter())
    assert (run_dir / "summary.json").read_text() == before
