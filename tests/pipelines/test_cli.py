"""The command line as a user meets it: options, what it prints, and one line on stderr with a
non-zero exit for bad input (tests/pipelines/test_bad_input.py has the full list of those)."""

from __future__ import annotations

import json
from collections import Counter
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console
from typer.testing import CliRunner

import pipelines.report
import pipelines.runner
from pipelines.cli import app
from pipelines.config import load_config, with_run_settings
from pipelines.table import COLUMNS, compact, summary_row, summary_table
from privacy.randomness import REPRODUCIBLE, REPRODUCIBLE_WARNING
from tests.pipelines.cli_testing import one_error_line, pipeline, tiny_sets


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "nosuch"], "unknown stage 'nosuch'"),
        (["run", "quantize"], "stage 'quantize' needs 'model' or 'onnx_model'"),
        (["run", "train", "--set", "train.epoch=2"], "unknown config key 'train.epoch'"),
        (["run", "train-ladp", "--set", "budget.epsilon=1.0"], "budget: stage 'train-ladp'"),
    ],
)
def test_bad_input_is_one_line_and_nonzero(tmp_path: Path, args: list[str], message: str) -> None:
    existing = tmp_path / "runs" / "kept"
    existing.mkdir(parents=True)
    (existing / "summary.json").write_text("{}")
    # The test's own --set comes last, so it wins over the tiny data set.
    proc = pipeline(*args[:2], "--run-dir", "runs/kept", *tiny_sets()[:2], *args[2:], cwd=tmp_path)
    assert message in one_error_line(proc)
    assert (existing / "summary.json").read_text() == "{}"


def test_version_names_the_installed_distribution(tmp_path: Path) -> None:
    proc = pipeline("--version", cwd=tmp_path)
    assert proc.returncode == 0
    assert proc.stdout == f"privcomp {version('privcomp')}\n"


def test_evaluate_is_a_choice(tmp_path: Path) -> None:
    proc = pipeline("run", "train", "--evaluate", "sometimes", cwd=tmp_path)
    assert proc.returncode == 2
    shown = " ".join(proc.stderr.replace("│", " ").split())  # typer's usage panel, unframed
    assert "'sometimes' is not one of 'each', 'last', 'none'" in shown
    assert not (tmp_path / "runs").exists()


def fake_summary(**run: Any) -> dict[str, Any]:
    stage = {
        "name": "train-ladp",
        "privacy": {"epsilon": 2.9949, "delta": 1e-5},
        "utility": {"test_accuracy": 0.91234},
        "size": {"params": 11_172_810, "bytes": 44_700_123, "macs": 557_000_000},
        "attacks": {
            "lira": {"auc": 0.61234, "tpr_at_0_1pct_fpr": 0.01234},
            "loss": {"auc": 0.55, "tpr_at_0_1pct_fpr": 0.0456},
        },
        "strongest": {"attack": "loss", "tpr": 0.04567, "tpr_lower": 0.0123, "tpr_upper": 0.1},
    }
    info = {"dataset": "mnist5k", "model": "resnet18", "seed": 0, **run}
    return {"run": info, "stages": [stage, {**stage, "name": "quantize"}]}


def test_seed_and_evaluate_reach_the_runner_as_typed_values(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    seen: dict[str, Any] = {}

    def run_pipeline(names: list[str], *, config: Any, run_dir: Path, **_: Any) -> Any:
        seen.update(names=names, config=config, run_dir=run_dir)
        return fake_summary()

    monkeypatch.setattr(pipelines.runner, "run_pipeline", run_pipeline)
    monkeypatch.setattr(pipelines.report, "write_report", lambda dirs: dirs[0] / "report.html")
    args = ["run", "train", "--seed", "7", "--evaluate", "last", "--run-dir", str(tmp_path)]
    result = CliRunner().invoke(app, [*args, "--set", "run.seed=3"])
    assert result.exit_code == 0, result.output
    assert seen["names"] == ["train"] and seen["run_dir"] == tmp_path
    run = seen["config"].run
    assert run.seed == 7 and type(run.seed) is int  # the option wins over --set
    assert run.evaluate == "last"


def test_run_settings_leave_the_loaded_config_alone() -> None:
    config = load_config(None, ["run.seed=3"])
    assert with_run_settings(config) == config
    changed = with_run_settings(config, seed=5, evaluate="none")
    assert changed.run.seed == 5 and changed.run.evaluate == "none"
    assert config.run.seed == 3 and config.run.evaluate == "each"
    assert changed.train == config.train


def test_stages_lists_needs_and_privacy_cost_and_its_brackets(tmp_path: Path) -> None:
    proc = pipeline("stages", cwd=tmp_path)
    assert proc.returncode == 0
    for name in ("train", "train-ladp", "prune", "quantize", "evaluate"):
        assert name in proc.stdout
    assert "[train-dpsgd]" in "".join(proc.stdout.split())  # not eaten as a rich tag


@pytest.mark.parametrize(
    ("value", "unit", "text"),
    [
        (0, "", "0"),
        (999, "", "999"),
        (999.6, "", "1k"),
        (22_698, "", "22.7k"),
        (11_172_810, "", "11.2M"),
        (912, "B", "912 B"),
        (44_700_123, "B", "44.7 MB"),
        (3.2e12, "B", "3.2 TB"),
    ],
)
def test_compact_sizes(value: float, unit: str, text: str) -> None:
    assert compact(value, unit=unit) == text


def printable(text: str) -> Counter[str]:
    """The characters of some rendered text, except spaces and the table's rules."""
    return Counter(c for c in text if not c.isspace() and c not in "─━│┃┏┓┗┛┡┩╇╈┳┻")


@pytest.mark.parametrize("width", [40, 80, 200])
def test_the_summary_table_never_cuts_a_number(width: int) -> None:
    summary = fake_summary(noise=REPRODUCIBLE, noise_note=REPRODUCIBLE_WARNING)
    console = Console(width=width, record=True)
    console.print(summary_table(summary))
    shown = console.export_text()
    assert "…" not in shown
    cells = [cell for entry in summary["stages"] for cell in summary_row(entry)]
    assert "11.2M" in cells and "44.7 MB" in cells and "3" in cells  # ε 2.9949 rounded up
    assert "0.046 [0.012, 0.100]" in cells
    if width >= 80:  # every row on one line
        for entry in summary["stages"]:
            assert " ".join(summary_row(entry)) in " ".join(shown.split())
    # Folded or not, every character of every cell, header and caption is there.
    expected = printable("".join([*cells, *COLUMNS, "privcomp · mnist5k · resnet18 · seed 0"]))
    assert not expected - printable(shown)
    assert "ε does not hold" in " ".join(shown.split())


def test_run_prints_the_summary_table_whole_through_a_pipe(tmp_path: Path) -> None:
    sets = [*tiny_sets(), "--set", 'evaluate.attacks=["loss"]']
    proc = pipeline(
        "run", "train", "prune", "--run-dir", "r", "--evaluate", "last", *sets, cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    lines = proc.stdout.splitlines()
    for entry in summary["stages"]:
        cells = summary_row(entry)
        assert any(line.split() == " ".join(cells).split() for line in lines), proc.stdout
    assert summary["stages"][1]["attacks"] and not summary["stages"][0]["attacks"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "train", "--evaluate", "sometimes"], "Invalid value for '--evaluate'"),
        (["run", "train", "--seed", "x"], "Invalid value for '--seed'"),
        (["run"], "Missing argument 'stages"),  # typer 0.20 names it STAGES...
    ],
)
def test_a_usage_error_is_one_line_too(tmp_path: Path, args: list[str], message: str) -> None:
    proc = pipeline(*args, cwd=tmp_path)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert message.lower() in lines[0].lower(), proc.stderr
    assert list(tmp_path.iterdir()) == []


def test_the_summary_table_says_a_defense_is_not_dp() -> None:
    summary = fake_summary()
    summary["stages"][0]["privacy"] = {"epsilon": None, "delta": None, "defense": "l2"}
    console = Console(width=100, record=True)
    console.print(summary_table(summary))
    assert "defense l2: not differential privacy" in " ".join(console.export_text().split())
