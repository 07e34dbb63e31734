"""Helpers of the command-line tests: run `pipeline` as a user does, and fingerprint a run dir
to show that a refused command changed nothing in it."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

from tests.conftest import TINY


def pipeline(*args: str, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pipelines.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def tiny_sets() -> list[str]:
    return [arg for item in TINY for arg in ("--set", item)]


def snapshot(directory: Path) -> dict[str, str]:
    """Every file under directory (its relative path) -> the sha256 of its bytes."""
    if not directory.exists():
        return {}
    return {
        str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


def one_error_line(proc: subprocess.CompletedProcess[str]) -> str:
    """The single stderr line of a command refused as a user error (exit 2)."""
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, (proc.returncode, proc.stderr)
    assert lines[0].startswith("error: "), lines[0]
    return lines[0]
