"""The runner's own checks, each with the mutation that would make it fail: the plan of every
stage is checked before anything is written, a spend that is not the admitted plan is refused and
not released, and attack numbers reach a shipped ONNX file only when asked for."""

from __future__ import annotations

import io
import json
from dataclasses import replace
from pathlib import Path

import pytest
from rich.console import Console

from models.onnx_io import read_metadata
from pipelines.config import load_config
from pipelines.context import RunContext
from pipelines.errors import PrivcompError
from pipelines.progress import Reporter
from pipelines.runner import run_pipeline
from pipelines.spend import Spend
from pipelines.stages.training import TrainLADP
from tests.conftest import TINY

QUIET = Reporter(Console(file=io.StringIO()))
FAST = [*TINY, 'train-ladp.accountant="rdp"']


def test_a_run_whose_later_stage_passes_the_budget_writes_nothing(tmp_path: Path) -> None:
    """Each training fits the budget alone (ε 4 of 5), the two together do not: refused before
    the first one reads the members."""
    config = load_config(None, [*FAST, 'train-dpsgd.accountant="rdp"', "budget.epsilon=5.0"])
    with pytest.raises(PrivcompError, match="budget: stage 'train-ladp'"):
        run_pipeline(
            ["train-dpsgd", "train-ladp"], config=config, run_dir=tmp_path / "run", reporter=QUIET
        )
    assert not (tmp_path / "run").exists()


def test_a_spend_that_is_not_the_admitted_plan_is_refused_and_not_released(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    honest = TrainLADP.planned_spend

    def looser_plan(self: TrainLADP, ctx: RunContext) -> Spend:
        """Admit a σ 10% above the one the stage will run: the run gets less noise."""
        planned = honest(self, ctx)
        sigma = planned.details["noise_multiplier"] * 1.1
        return replace(planned, details={**planned.details, "noise_multiplier": sigma})

    monkeypatch.setattr(TrainLADP, "planned_spend", looser_plan)
    config = load_config(None, [*FAST, 'run.evaluate="none"'])
    with pytest.raises(RuntimeError, match="spent another mechanism than admitted"):
        run_pipeline(["train-ladp"], config=config, run_dir=tmp_path, reporter=QUIET)
    assert not (tmp_path / "01-train-ladp").exists()  # the refused model is gone
    releases = json.loads((tmp_path / "releases.json").read_text())["releases"]
    assert releases == []  # and nothing was released


@pytest.mark.parametrize("attack_metadata", [False, True])
def test_attack_numbers_reach_the_onnx_files_only_when_asked(
    tmp_path: Path, attack_metadata: bool
) -> None:
    """With every artifact attacked (run.evaluate each), as the default run does."""
    config = load_config(
        None,
        [
            *FAST,
            'evaluate.attacks=["loss"]',
            f"export.attack_metadata={str(attack_metadata).lower()}",
        ],
    )
    run_pipeline(["train", "export", "quantize"], config=config, run_dir=tmp_path, reporter=QUIET)
    for path in (
        tmp_path / "02-export" / "model.onnx",
        tmp_path / "03-quantize" / "model.int8.onnx",
    ):
        meta = read_metadata(path)
        keys = [k for k in meta if k.startswith("privcomp.attack")]
        if attack_metadata:
            assert "privcomp.attack.note" in keys, path
            assert json.loads(meta["privcomp.attack.tpr"]) is not None, path  # measured
        else:
            assert keys == [], path


def test_a_resumed_audit_keeps_its_attacks(tmp_path: Path) -> None:
    """Killed after the manifest but before the evaluate stage's metrics.json: the resumed run
    measures the audit's attacks again, so its summary is the uninterrupted one."""
    config = load_config(
        None, [*FAST, 'evaluate.attacks=["loss"]', 'evaluate.audit_attacks=["loss", "gap"]']
    )
    first = run_pipeline(["train", "evaluate"], config=config, run_dir=tmp_path, reporter=QUIET)
    assert set(first["stages"][-1]["attacks"]) == {"loss", "gap"}
    (tmp_path / "02-evaluate" / "metrics.json").unlink()
    again = run_pipeline(["train", "evaluate"], config=config, run_dir=tmp_path, reporter=QUIET)
    assert again["stages"] == first["stages"]


def test_the_budget_before_a_run_counts_the_run_dirs_earlier_releases(tmp_path: Path) -> None:
    """A DP-SGD release (ε 4 of 5) in the run dir, then a pipeline whose first training (ε 0.5)
    fits with it and whose second does not: refused before the first reads the members."""
    config = load_config(
        None,
        [*FAST, 'train-dpsgd.accountant="rdp"', "train-ladp.epsilon=0.5", "budget.epsilon=5.0"],
    )
    config = config.with_values("run", evaluate="none")
    run_pipeline(["train-dpsgd"], config=config, run_dir=tmp_path, reporter=QUIET)
    with pytest.raises(PrivcompError, match="budget: stage 'train-dpsgd'"):
        run_pipeline(["train-ladp", "train-dpsgd"], config=config, run_dir=tmp_path, reporter=QUIET)
    assert not (tmp_path / "01-train-ladp").exists()
    releases = json.loads((tmp_path / "releases.json").read_text())["releases"]
    assert [r["stage"] for r in releases] == ["train-dpsgd"]


def test_a_dp_stage_killed_after_it_returned_resumes_as_one_release(tmp_path: Path) -> None:
    """Killed after the stage wrote result.json but before the release log and the manifest
    heard of it: the resumed run reuses the stage and logs it once, as done."""
    config = load_config(None, [*FAST, 'run.evaluate="none"', "run.reproducible_noise=true"])
    first = run_pipeline(["train-ladp"], config=config, run_dir=tmp_path, reporter=QUIET)
    log = tmp_path / "releases.json"
    done = json.loads(log.read_text())["releases"]
    started = [{**done[0], "status": "started", "outputs": {}}]
    log.write_text(json.dumps({"releases": started}))
    (tmp_path / "manifest.json").unlink()
    again = run_pipeline(["train-ladp"], config=config, run_dir=tmp_path, reporter=QUIET)
    assert again["stages"] == first["stages"]
    assert json.loads(log.read_text())["releases"] == done


def test_the_same_stage_of_another_pipeline_is_not_an_earlier_release(tmp_path: Path) -> None:
    """`train-ladp prune` then `train-dpsgd prune` in one run dir: the second prune fine-tunes
    another model, so the first one's release counts in the members' total, not in the new
    lineage, and does not make the second a re-run."""
    finetune = ['prune.finetune="ladp"', "prune.finetune_epsilon=5.0", "prune.finetune_epochs=1"]
    config = load_config(
        None, [*FAST, 'train-dpsgd.accountant="rdp"', 'run.evaluate="none"', *finetune]
    )
    first = run_pipeline(["train-ladp", "prune"], config=config, run_dir=tmp_path, reporter=QUIET)
    second = run_pipeline(["train-dpsgd", "prune"], config=config, run_dir=tmp_path, reporter=QUIET)
    for summary in (first, second):
        assert summary["stages"][-1]["privacy"]["epsilon"] <= 5.0 * (1 + 1e-9)  # its target
    total = second["ledger"]["total"]["epsilon"]
    assert total > first["ledger"]["total"]["epsilon"]  # the four releases, composed
    releases = json.loads((tmp_path / "releases.json").read_text())["releases"]
    assert [r["stage"] for r in releases] == ["train-ladp", "prune", "train-dpsgd", "prune"]
