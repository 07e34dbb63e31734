"""Compression stages through the runner (tiny data): ε per stage, ONNX metadata, `inspect`, the
records of what each transform chose, private calibration, PATE, and fine-tuning variants run
stage by stage on the same artifacts."""

from __future__ import annotations

import io
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
import torch
from rich.console import Console
from typer.testing import CliRunner

from attacks.consistency import strongest_attack
from attacks.metrics import RocCurve
from compress.prune import replay_history
from models.io import load_model, read_arch
from models.onnx_io import read_metadata
from models.zoo import count_params
from pipelines.artifacts import MODEL, ONNX_MODEL, artifact_hash
from pipelines.cli import inspect_warnings
from pipelines.config import Config, load_config
from pipelines.context import RunContext
from pipelines.data import load_dataset, make_splits
from pipelines.errors import PrivcompError
from pipelines.ledger import Budget, Ledger, replay_run
from pipelines.measurements import Measurement
from pipelines.onnx_metadata import onnx_metadata
from pipelines.progress import Reporter
from pipelines.runner import plan, run_pipeline
from pipelines.stage import Stage, StageResult
from pipelines.stages import STAGES
from tests.conftest import TINY

STAGES_RUN = ["train-ladp", "prune", "export", "distill", "quantize"]
SETTINGS = [
    *TINY,
    'run.evaluate="none"',
    'prune.finetune="ladp"',
    "prune.finetune_epochs=1",
    "prune.finetune_epsilon=6.0",
    "distill.epochs=8",
    "distill.student_width=4",
    "distill.student_hidden=32",
    "quantize.timing_samples=64",
]


@dataclass
class Run:
    run_dir: Path
    config: Config
    summary: dict[str, Any]
    stages: dict[str, dict[str, Any]]  # name -> summary entry
    reporter_output: io.StringIO


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    config = load_config(None, SETTINGS)
    run_dir = tmp_path_factory.mktemp("compression-run")
    out = io.StringIO()
    summary = run_pipeline(
        STAGES_RUN, config=config, run_dir=run_dir, reporter=Reporter(Console(file=out))
    )
    return Run(run_dir, config, summary, {s["name"]: s for s in summary["stages"]}, out)


def metadata(path: Path) -> dict[str, Any]:
    """privcomp's metadata (JSON values); ONNX Runtime's static quantizer adds plain strings of
    its own (auto picks static or not by timing, so they come and go)."""
    props = onnx.load(str(path)).metadata_props
    return {p.key: json.loads(p.value) for p in props if p.key.startswith("privcomp.")}


def result_json(run: Run, position: int, name: str) -> dict[str, Any]:
    return json.loads((run.run_dir / f"{position:02d}-{name}" / "result.json").read_text())


# ---- the whole chain, through the runner ----------------------------------------------------


def test_epsilon_per_stage_post_processing_keeps_it_dp_fine_tune_raises_it(run: Run) -> None:
    from opacus.accountants import PRVAccountant

    eps = {name: s["privacy"]["epsilon"] for name, s in run.stages.items()}
    assert 0 < eps["train-ladp"] <= 4.0
    assert eps["train-ladp"] < eps["prune"] <= 6.0
    assert eps["prune"] == pytest.approx(6.0, rel=0.01)  # σ calibrated to the composed target
    assert eps["export"] == eps["distill"] == eps["quantize"] == eps["prune"]
    # The fine-tune continues the training's accountant: PRV over the concatenated history.
    ledger = json.loads((run.run_dir / "ledger.json").read_text())
    history = [
        (h["noise_multiplier"], h["sample_rate"], h["steps"])
        for h in ledger["datasets"]["members"]["history"]
    ]
    assert len(history) == 2
    accountant = PRVAccountant()
    accountant.history = history
    assert eps["prune"] == pytest.approx(accountant.get_epsilon(delta=1e-4), rel=1e-6)
    assert ledger["total"]["epsilon"] == pytest.approx(eps["prune"])


def test_prune_records_sizes_macs_and_the_fine_tune(run: Run) -> None:
    metrics = result_json(run, 2, "prune")["metrics"]
    assert metrics["params_after"] * 3 < metrics["params_before"]
    assert 0 < metrics["macs_after"] < metrics["macs_before"]
    assert metrics["bytes_after"] < metrics["bytes_before"]
    dp = metrics["finetune_dp"]
    assert dp["steps"] == dp["steps_planned"] > 0
    assert dp["epsilon_composed"] <= dp["target_epsilon"] == 6.0


def test_export_carries_the_guarantee_accuracy_and_history(run: Run) -> None:
    path = run.run_dir / run.stages["export"]["artifact"]
    meta = metadata(path)
    assert meta["privcomp.epsilon"] == run.stages["export"]["privacy"]["epsilon"]
    assert meta["privcomp.delta"] == 1e-4 and meta["privcomp.accountant"] == "prv"
    assert meta["privcomp.test_accuracy"] == run.stages["export"]["utility"]["test_accuracy"]
    assert meta["privcomp.stages"] == ["train-ladp", "prune", "export"]
    assert meta["privcomp.version"] and meta["privcomp.dataset"] == "digits"
    assert meta["privcomp.noise"] == "secure" and "never recorded" in meta["privcomp.noise_note"]
    # Attack results are statistics of the members that ε does not cover: not shipped by default.
    assert not any(key.startswith("privcomp.attack") for key in meta)
    metrics = result_json(run, 3, "export")["metrics"]
    # export's bound is relative to the logits' size (float32: ~7 significant digits)
    assert 0 <= metrics["max_abs_diff_vs_torch"] <= 1e-4 * metrics["logit_scale"]


def test_distilled_student_is_smaller_and_reloads(run: Run) -> None:
    student, arch = load_model(run.run_dir / "04-distill")
    teacher, _ = load_model(run.run_dir / "02-prune")
    assert count_params(student) < count_params(teacher)
    assert arch["kwargs"]["width"] == 4 and arch["kwargs"]["hidden"] == 32
    metrics = result_json(run, 4, "distill")["metrics"]
    assert metrics["mode"] == "soft" and metrics["temperature"] == 3.0
    assert metrics["student_macs"] < metrics["teacher_macs"]


def test_quantize_picks_a_measured_mode_and_stamps_its_own_accuracy(run: Run) -> None:
    metrics = result_json(run, 5, "quantize")["metrics"]
    assert metrics["mode"] in ("static", "dynamic", "weights-only")
    assert set(metrics["timings_ms"]) == {"fp32", "static", "dynamic", "weights-only"}
    assert metrics["calibration"] == "public"
    path = run.run_dir / run.stages["quantize"]["artifact"]
    meta = metadata(path)
    assert meta["privcomp.quantization"] == metrics["mode"]
    assert meta["privcomp.test_accuracy"] == run.stages["quantize"]["utility"]["test_accuracy"]
    assert meta["privcomp.epsilon"] == run.stages["quantize"]["privacy"]["epsilon"]
    assert meta["privcomp.stages"] == [*STAGES_RUN]


def test_each_compression_stage_records_what_it_chose(run: Run) -> None:
    records = {}
    for position, name in [(2, "prune"), (3, "export"), (5, "quantize")]:
        folder = run.run_dir / f"{position:02d}-{name}"
        records[name] = json.loads((folder / "compression.json").read_text())
        assert records[name] == result_json(run, position, name)["metrics"]["compression"]
    pruned = records["prune"]["prune"]
    assert pruned["settings"] == {
        "ratio": 0.5,
        "importance": "l2",
        "global_pruning": False,
        "iterative_steps": 1,
    }
    assert pruned["data"] == {"importance_samples": None} and pruned["finetune"] == "ladp"
    assert pruned["structure"] == read_arch(run.run_dir / "02-prune")["structure"]
    # The history is exact: replayed on the trained model it gives the pruned widths (the DP
    # fine-tune changed the weights after, not which channels went).
    model, _ = load_model(run.run_dir / "01-train-ladp")
    example = torch.zeros(2, *load_dataset("digits").in_shape)
    replay_history(model, example, pruned["history"])
    target, _ = load_model(run.run_dir / "02-prune")
    shapes = {k: v.shape for k, v in target.state_dict().items()}
    assert {k: v.shape for k, v in model.state_dict().items()} == shapes
    assert set(records["export"]) == {"export"}
    assert records["export"]["export"]["settings"] == {"tolerance": 1e-4}
    # quantize's input is distill's torch model: it exported first, and records both.
    quantized = records["quantize"]["quantize"]
    assert set(records["quantize"]) == {"export", "quantize"}
    assert quantized["settings"]["mode"] == "auto"
    assert quantized["mode"] == result_json(run, 5, "quantize")["metrics"]["mode"]
    assert quantized["data"] == {"calibration": "public", "calibration_samples": 32}


def test_inspect_prints_the_metadata(run: Run) -> None:
    from pipelines.cli import app

    path = run.run_dir / run.stages["export"]["artifact"]
    result = CliRunner().invoke(app, ["inspect", str(path)])
    assert result.exit_code == 0, result.output
    for key in ("privcomp.epsilon", "privcomp.test_accuracy", "privcomp.noise"):
        assert key in result.output
    assert "warning" not in result.output  # secure noise, no attack statistics inside
    missing = CliRunner().invoke(app, ["inspect", str(run.run_dir / "nosuch.onnx")])
    assert missing.exit_code == 2


# ---- single stages on the run's artifacts ---------------------------------------------------


def stage_context(run: Run, tmp_path: Path, upto: int, *overrides: str) -> RunContext:
    """The context a stage at position upto + 1 would see, in a copy of the run's first stages."""
    config = load_config(None, [*SETTINGS, *overrides])
    for position, name in enumerate(STAGES_RUN[:upto], start=1):
        folder = f"{position:02d}-{name}"
        shutil.copytree(run.run_dir / folder, tmp_path / folder)
    data = load_dataset("digits")
    splits = make_splits(len(data.y), seed=0, fractions=config.data.fractions())
    ctx = RunContext(tmp_path, config, data, splits, Reporter(Console(file=io.StringIO())))
    ctx.history = STAGES_RUN[:upto]
    ctx.artifacts = {MODEL: tmp_path / f"{upto:02d}-{STAGES_RUN[upto - 1]}"}
    ctx.latest = MODEL
    ctx.ledger = replay_run(tmp_path, ctx.history, budget=Budget.from_settings(config.budget))
    ctx.guarantee = ctx.ledger.current
    ctx.position = upto + 1
    ctx.stage_dir = tmp_path / f"{upto + 1:02d}-next"
    ctx.stage_dir.mkdir()
    return ctx


def run_stage(name: str, ctx: RunContext) -> tuple[Stage, StageResult]:
    """As the runner does: check, plan, admit, run."""
    stage = STAGES[name](ctx.config.section(name))
    stage.check(ctx)
    ctx.planned = stage.planned_spend(ctx)
    ctx.ledger.admit(name, ctx.planned)
    return stage, stage.run(ctx)


def test_private_calibration_is_refused_unless_allowed_and_then_not_private(
    run: Run, tmp_path: Path
) -> None:
    members = 'quantize.calibration="members"'
    with pytest.raises(PrivcompError, match="allow_private_calibration"):
        load_config(None, [*SETTINGS, members])  # refused with the settings, before any run
    ctx = stage_context(
        run, tmp_path / "allowed", 2, members, "quantize.allow_private_calibration=true"
    )
    out = io.StringIO()
    ctx.reporter = Reporter(Console(file=out, width=200))
    _, result = run_stage("quantize", ctx)
    assert result.spend.kind == "none"
    ledger = ctx.ledger
    ledger.warn = ctx.reporter.info  # as the runner's ledger does
    after = ledger.record("quantize", result.spend)
    assert after.epsilon is None and ledger.total().epsilon is None
    assert "NOT private" in out.getvalue()
    assert metadata(result.outputs[ONNX_MODEL])["privcomp.epsilon"] is None


def test_private_calibration_never_fits_a_budget(run: Run, tmp_path: Path) -> None:
    ctx = stage_context(
        run,
        tmp_path,
        2,
        'quantize.calibration="members"',
        "quantize.allow_private_calibration=true",
        "budget.epsilon=100.0",
    )
    with pytest.raises(PrivcompError, match="without DP"):
        run_stage("quantize", ctx)
    assert list(ctx.stage_dir.iterdir()) == []


def test_export_puts_the_strongest_measured_attack_in_the_metadata(
    run: Run, tmp_path: Path
) -> None:
    ctx = stage_context(run, tmp_path, 2, "export.attack_metadata=true")
    model_dir = ctx.artifacts[MODEL]
    sizes = {"n_members": 200, "n_nonmembers": 200}
    # loss has the larger AUC, lira the larger TPR at 1% FPR: the headline is lira's.
    attacks = {"loss": {**sizes, "auc": 0.61}, "lira": {**sizes, "auc": 0.58}}
    roc = {
        "loss": {"fpr": [0.0, 0.01, 1.0], "tpr": [0.0, 0.05, 1.0]},
        "lira": {"fpr": [0.0, 0.01, 1.0], "tpr": [0.0, 0.2, 1.0]},
    }
    digest = artifact_hash(MODEL, model_dir)
    ctx.measurements.put(Measurement(digest, utility={}, size={}, attacks=attacks, roc=roc))
    _, result = run_stage("export", ctx)
    meta = metadata(result.outputs[ONNX_MODEL])
    curves = {k: RocCurve(np.array(v["fpr"]), np.array(v["tpr"])) for k, v in roc.items()}
    expected = strongest_attack(curves, fpr_point=0.01, **sizes)
    assert expected is not None and expected.attack == "lira" and expected.beats_chance
    assert (meta["privcomp.attack.attack"], meta["privcomp.attack.fpr"]) == ("lira", 0.01)
    assert meta["privcomp.attack.tpr"] == 0.2
    assert meta["privcomp.attack.tpr_interval"] == [expected.tpr_lower, expected.tpr_upper]
    assert meta["privcomp.attack.beats_chance"] is True
    assert meta["privcomp.attack.measured_on"] == "02-prune"
    assert "not covered by ε" in meta["privcomp.attack.note"]  # labelled as the audit's
    shown = inspect_warnings(read_metadata(result.outputs[ONNX_MODEL]))  # `pipeline inspect`
    assert any("not covered by ε" in line for line in shown)
    ctx.config = load_config(None, SETTINGS)  # the default: attack_metadata = false
    off = onnx_metadata(
        ctx,
        stage="export",
        guarantee=ctx.guarantee,
        test_accuracy=0.5,
        attack={"auc": 0.6},
        attack_metadata=ctx.config.export.attack_metadata,
    )
    assert not any(k.startswith("privcomp.attack") for k in off)
    assert json.loads(off["privcomp.test_accuracy"]) == 0.5


def test_pate_distillation_is_its_own_lineage_composed_in_the_total(
    run: Run, tmp_path: Path
) -> None:
    ctx = stage_context(
        run,
        tmp_path,
        2,
        'distill.mode="pate"',
        "distill.teachers=4",
        "distill.teacher_epochs=5",
        "distill.queries=40",
        "distill.gnmax_sigma=10.0",
        "distill.delta=1e-4",
    )
    _, result = run_stage("distill", ctx)
    spend = result.spend
    assert spend.kind == "dp" and spend.lineage == "new"
    assert spend.details["steps"] == 40 and spend.details["accountant"] == "rdp"
    assert spend.details["noise"] == "secure"  # GNMax noise from OS entropy by default
    ledger = ctx.ledger
    before = ledger.total().epsilon
    student = ledger.record("distill", spend)
    assert student.epsilon == pytest.approx(spend.epsilon)  # PATE's own bound
    total = ledger.total().epsilon
    assert before is not None and total is not None
    assert max(before, spend.epsilon or 0) < total < before + (spend.epsilon or 0)
    assert result.metrics["queries"] == 40
    assert 0 <= result.metrics["audit_only"]["label_accuracy"] <= 1  # not covered by ε


def test_pruning_with_taylor_steps_and_public_fine_tune_is_free(run: Run, tmp_path: Path) -> None:
    ctx = stage_context(
        run,
        tmp_path,
        1,
        'prune.importance="taylor"',
        "prune.iterative_steps=2",
        'prune.finetune="public"',
    )
    _, result = run_stage("prune", ctx)
    assert result.spend.kind == "post-processing"
    assert result.metrics["iterative_steps"] == 2 and result.metrics["importance"] == "taylor"
    assert result.metrics["params_after"] * 3 < result.metrics["params_before"]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (['prune.importance="nosuch"'], "prune.importance 'nosuch' unknown"),
        (['prune.finetune="sometimes"'], "prune.finetune must be one of"),
        (['quantize.mode="int4"'], "quantize.mode must be one of"),
        (['quantize.calibration_method="magic"'], "calibration_method must be one of"),
        (['distill.mode="magic"'], "distill.mode must be one of"),
        (['distill.mode="pate"', "distill.teachers=100000"], "teachers need at least"),
        (["export.tolerance=0.0"], "export.tolerance must be > 0"),
    ],
)
def test_bad_settings_are_one_line_errors_before_anything_runs(
    overrides: list[str], message: str
) -> None:
    """Refused when the settings are loaded, or (what needs the data) by the stages' checks."""
    with pytest.raises(PrivcompError, match=message):
        config = load_config(None, [*SETTINGS, *overrides])
        data = load_dataset("digits")
        splits = make_splits(len(data.y), seed=0, fractions=config.data.fractions())
        reporter = Reporter(Console(file=io.StringIO()))
        ctx = RunContext(Path("unused"), config, data, splits, reporter)
        for stage in plan(["train-ladp", "prune", "export", "distill", "quantize"], config):
            stage.check(ctx)


def test_ledger_replay_matches_the_runners_ledger(run: Run) -> None:
    records = [
        (name, result_json(run, position, name)["spend"])
        for position, name in enumerate(STAGES_RUN, start=1)
    ]
    from pipelines.stage import Spend

    replayed = Ledger.replay([(n, Spend(**s)) for n, s in records])
    assert (
        replayed.to_dict()["total"]
        == json.loads((run.run_dir / "ledger.json").read_text())["total"]
    )
    assert np.isfinite(replayed.total().epsilon or np.nan)
