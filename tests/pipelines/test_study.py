"""The defense study: matching at equal accuracy on hand-made curves, and one tiny study end to
end through the command line (tables and figures written)."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pipelines import study as study_module
from pipelines.cli import app
from pipelines.study import (
    MethodJob,
    StudyOptions,
    analyse,
    interpolate_match,
    methods,
    verdict,
)

CURVE = [
    (1.0, 0.50, {"value": 0.10, "ci": [0.05, 0.15]}),
    (10.0, 0.90, {"value": 0.30, "ci": [0.20, 0.40]}),
    (100.0, 0.95, {"value": 0.60, "ci": [0.50, 0.70]}),
]


def test_the_dp_match_is_interpolated_in_log_epsilon() -> None:
    match = interpolate_match(0.70, CURVE)
    assert match is not None
    assert match["epsilon"] == pytest.approx(math.sqrt(10.0))
    assert match["value"] == pytest.approx(0.20)
    assert match["ci"] == pytest.approx([0.125, 0.275])
    assert interpolate_match(0.95, CURVE)["epsilon"] == pytest.approx(100.0)  # type: ignore[index]
    assert interpolate_match(0.97, CURVE) is None  # above the grid's best accuracy
    assert interpolate_match(0.40, CURVE) is None  # below its worst
    assert interpolate_match(0.90, CURVE)["epsilon"] == 10.0  # type: ignore[index]
    # A noisy curve that crosses 0.85 twice: the smallest ε that reaches it.
    noisy = [CURVE[0], (3.0, 0.9, CURVE[1][2]), (10.0, 0.8, CURVE[1][2]), CURVE[2]]
    assert interpolate_match(0.85, noisy)["epsilon"] < 3.0  # type: ignore[index]
    # An exact tie further up the grid does not win over an earlier crossing.
    tied = [*noisy, (300.0, 0.85, CURVE[2][2])]
    assert interpolate_match(0.85, tied)["epsilon"] < 3.0  # type: ignore[index]


def test_the_verdict_needs_the_intervals_apart() -> None:
    dp = {"value": 0.2, "ci": [0.15, 0.25]}
    assert verdict({"value": 0.05, "ci": [0.0, 0.1]}, dp) == "defense leaks less"
    assert verdict({"value": 0.5, "ci": [0.4, 0.6]}, dp) == "DP leaks less"
    assert verdict({"value": 0.22, "ci": [0.1, 0.3]}, dp) == "no significant difference"
    assert verdict({"value": 0.22, "ci": [0.1, 0.3]}, None) == "no DP match"
    assert verdict({"value": 0.05}, dp) == "not tested (no interval)"
    dominated = verdict({"value": 0.5, "ci": [0.4, 0.6]}, None, below_grid=dp)
    assert dominated.startswith("DP dominates")
    assert verdict({"value": 0.2, "ci": [0.1, 0.3]}, None, below_grid=dp) == "no DP match"


def _result(name: str, kind: str, acc: float, tpr: float, eps: float | None = None) -> dict:
    attack = {"auc": 0.6, "tpr_at_1pct_fpr": tpr / 2, "tpr_at_1pct_fpr_ci": [0, tpr]}
    attack["canaries"] = {"auc": 0.7, HEAD: tpr, f"{HEAD}_ci": [tpr * 0.5, tpr * 1.5]}
    engine = name.split(" ")[0] if kind == "dp" else None
    return {
        "method": {"name": name, "kind": kind, "epsilon": eps, "engine": engine},
        "summary": {
            "run": {"noise": "secure"},
            "stages": [
                {
                    "privacy": {"release": "scores"},
                    "utility": {"test_accuracy": acc},
                    "attacks": {"lira": attack},
                }
            ],
        },
        "stage_metrics": {"cost": {"seconds": 2.0 if kind == "baseline" else 5.0}},
    }


HEAD = "tpr_at_1pct_fpr"


def test_analyse_matches_each_defense_against_each_engine() -> None:
    results = [
        _result("undefended", "baseline", 0.95, 0.5),
        _result("l2", "defense", 0.70, 0.02),
        _result("dp-sgd ε=1", "dp", 0.50, 0.1, 1.0),
        _result("dp-sgd ε=10", "dp", 0.90, 0.3, 10.0),
        {"method": {"name": "ladp ε=1"}, "error": "boom"},
    ]
    study = analyse(results)
    rows = {r["name"]: r for r in study["methods"]}
    assert rows["l2"]["cost"]["seconds_vs_baseline"] == pytest.approx(2.5)
    l2 = rows["l2"]["match"]
    assert l2["dp-sgd"]["dp"]["epsilon"] == pytest.approx(math.sqrt(10.0))
    assert l2["dp-sgd"]["verdict"] == "defense leaks less"
    assert l2["ladp"] == {"dp": None, "verdict": "no DP match"}  # its only run failed
    assert rows["undefended"]["match"]["dp-sgd"]["verdict"] == "no DP match"
    assert study["failed"] == [{"method": "ladp ε=1", "error": "boom"}]


def test_the_methods_share_everything_but_what_they_compare() -> None:
    options = StudyOptions(out=Path("x"), defenses=("l2",), epsilons=(3.0,), model="resnet18")
    names = [m.name for m in methods(options)]
    assert names == ["undefended", "l2", "dp-sgd ε=3", "ladp ε=3"]
    # The baseline's references train like it, as "auto" does for the defended and DP ones.
    assert 'evaluate.reference_recipe="target"' in methods(options)[0].settings
    dpsgd = methods(options)[2]
    assert 'train-dpsgd.per_example="privcomp"' in dpsgd.settings  # Opacus fails on resnet18
    assert not any("per_example" in s for s in methods(options)[3].settings)  # LADP's own


def test_a_tiny_study_writes_its_table_and_figures(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PRIVCOMP_DEBUG", raising=False)
    out = tmp_path / "study"
    tiny = [
        "model.width=16",
        "train.epochs=3",
        "evaluate.shadow_epochs=3",
        "evaluate.samples=60",
        "train-ladp.epochs=2",
        "train-dpsgd.epochs=2",
        "train-ladp.delta=1e-4",
        "train-dpsgd.delta=1e-4",
        'evaluate.attacks=["loss", "shadow", "lira", "rmia"]',
        "defense.trust-score-masking.index_size=60",
    ]
    args = ["compare-defenses", "--dataset", "digits", "--defenses", "l2,trust-score-masking"]
    args += ["--epsilon", "3,30", "--canaries", "20", "--references", "2"]
    args += ["--dp-references", "2", "--executor", "serial", "--out", str(out)]
    args += [a for item in tiny for a in ("--set", item)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, (result.output, result.exception)
    study = json.loads((out / "study.json").read_text())
    assert study["failed"] == []
    names = [r["name"] for r in study["methods"]]
    assert names == ["undefended", "l2", "trust-score-masking", *DP_NAMES]
    masked = next(r for r in study["methods"] if r["name"] == "trust-score-masking")
    assert masked["release"] == "masked-scores" and "gap" in masked["attacks"]
    for row in study["methods"]:
        assert row["strongest"]["on"] == "canaries"
        assert row["cost"]["seconds"] > 0
        assert set(row["match"] or {}) <= {"dp-sgd", "ladp"}
    text = (out / "study.md").read_text()
    assert "## Defenses against DP at equal test accuracy" in text
    assert "| trust-score-masking | masked-scores |" in text
    for figure in ("attack_accuracy", "lira_rmia", "test_accuracy", "privacy_utility"):
        assert (out / "figures" / f"{figure}.png").read_bytes()[:4] == b"\x89PNG"
    # A second call reuses every method's finished run dir.
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 0
    assert json.loads((out / "study.json").read_text())["methods"] == study["methods"]


DP_NAMES = ["dp-sgd ε=3", "dp-sgd ε=30", "ladp ε=3", "ladp ε=30"]


def test_bad_study_input_is_one_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("PRIVCOMP_DEBUG", raising=False)
    cases = [
        (["--dataset", "nosuch"], "unknown dataset 'nosuch'"),
        (["--canaries", "5000"], "data.canaries = 5000 needs"),
        (["--defenses", "l2,l2"], "--defenses names a value twice"),
        (["--defenses", ","], "--defenses names no defense"),
        (["--epsilon", "3,3.0000001"], "--epsilon names a value twice"),
        (["--defenses", "nosuch"], "unknown defense(s) nosuch"),
        (["--epsilon", "1,x"], "--epsilon must be numbers"),
        (["--epsilon", "0"], "--epsilon needs one or more finite values > 0"),
        (["--set", "train.epochs=0"], "train: need epochs >= 1"),
        (["--model", "nosuch"], "unknown model 'nosuch'"),
    ]
    for extra, words in cases:
        result = CliRunner().invoke(app, ["compare-defenses", "--out", str(tmp_path), *extra])
        assert result.exit_code == 2, (extra, result.output)
        assert words in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "runs").exists()  # refused before any method trained


def test_a_failing_method_is_reported_and_the_exit_is_not_zero(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PRIVCOMP_DEBUG", raising=False)

    def run_method(job: MethodJob) -> dict:
        if job.method.kind == "dp":
            return {"method": dataclasses.asdict(job.method), "error": "boom"}
        return _result(job.method.name, job.method.kind, 0.9, 0.2)

    monkeypatch.setattr(study_module, "run_method", run_method)
    out = tmp_path / "study"
    args = ["compare-defenses", "--dataset", "digits", "--defenses", "l2", "--epsilon", "3"]
    result = CliRunner().invoke(app, [*args, "--executor", "serial", "--out", str(out)])
    assert result.exit_code == 2
    assert "2 of 4 methods failed" in result.stderr and "boom" in result.stderr
    assert "dp-sgd ε=3: boom" in (out / "study.md").read_text()  # what ran is kept
