"""The attacks' errors reach the user as the CLI's one line (exit 2), not as a crash."""

from pathlib import Path

from typer.testing import CliRunner

from pipelines.cli import EXIT_USER_ERROR, app


def test_an_unknown_attack_is_one_line_before_anything_runs(tmp_path: Path) -> None:
    run_dir = tmp_path / "r"
    args = ["run", "train", "evaluate", "--run-dir", str(run_dir)]
    result = CliRunner().invoke(app, [*args, "--set", 'evaluate.attacks=["nope"]'])
    assert result.exit_code == EXIT_USER_ERROR, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: unknown attack(s) nope"), lines
    assert not run_dir.exists()
