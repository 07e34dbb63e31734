"""The command line as a user meets it: one line on stderr and a non-zero exit for bad input."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import TINY


def pipeline(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pipelines.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )


def tiny_sets() -> list[str]:
    return [arg for item in TINY for arg in ("--set", item)]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "nosuch"], "unknown stage 'nosuch'"),
        (["run", "quantize"], "stage 'quantize' needs 'model' or 'onnx_model'"),
        (["run", "train", "--set", "train.epoch=2"], "unknown config key 'train.epoch'"),
        (["run", "train-ladp", "--set", "train-ladp.epsilon=0"], "finite number > 0"),
        (["run", "train-ladp", "--set", "train-ladp.delta=0.5"], "delta must be in (0, 1/n)"),
        (["run", "train", "--config", "missing.toml"], "config file not found"),
        (["run", "train-ladp", "--set", "budget.epsilon=1.0"], "budget: stage 'train-ladp'"),
        (["run", "train", "--set", "run.dataset=mnist"], "set run.data_root"),
    ],
)
def test_bad_input_is_one_line_and_nonzero(tmp_path: Path, args: list[str], message: str) -> None:
    existing = tmp_path / "runs" / "kept"
    existing.mkdir(parents=True)
    (existing / "summary.json").write_text("{}")
    # The test's own --set comes last, so it wins over the tiny data set.
    proc = pipeline(*args[:2], "--run-dir", "runs/kept", *tiny_sets()[:2], *args[2:], cwd=tmp_path)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], proc.stderr
    assert (existing / "summary.json").read_text() == "{}"


def test_stages_lists_needs_and_privacy_cost(tmp_path: Path) -> None:
    proc = pipeline("stages", cwd=tmp_path)
    assert proc.returncode == 0
    for name in ("train", "train-ladp", "prune", "quantize", "evaluate"):
        assert name in proc.stdout


def test_run_prints_the_summary_table(tmp_path: Path) -> None:
    sets = [*tiny_sets(), "--set", 'evaluate.attacks=["loss"]']
    proc = pipeline(
        "run", "train", "prune", "--run-dir", "r", "--evaluate", "last", *sets, cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    assert "test acc" in proc.stdout and "prune" in proc.stdout
    assert (tmp_path / "r" / "summary.json").exists()
