"""The run directory's contract with a user (DESIGN §8): one process at a time, and a run killed
with kill -9 at any point resumes to the summary an uninterrupted run writes.

The kill lands at a known point through the test-only pause of pipelines.progress: the run
writes a marker file at the n-th progress update of a named task and waits there to be killed.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from pipelines.progress import TEST_PAUSE, TEST_PAUSE_MARKER
from tests.conftest import TINY
from tests.pipelines.cli_testing import snapshot

# Reproducible noise: the resumed run must redraw the noise the uninterrupted one drew. The
# references train in two worker processes, so that the kill takes worker processes with it.
SETTINGS = [
    *TINY,
    "run.reproducible_noise=true",
    'prune.finetune="ladp"',
    "prune.finetune_epochs=1",
    "prune.finetune_epsilon=6.0",
    'run.executor="local"',
    "run.workers=2",
    'evaluate.attacks=["loss", "lira"]',
]
STAGES = ["train-ladp", "prune"]


def command(run_dir: Path, stages: list[str]) -> list[str]:
    sets = [arg for item in SETTINGS for arg in ("--set", item)]
    return [sys.executable, "-m", "pipelines.cli", "run", *stages, "--run-dir", str(run_dir), *sets]


def start(run_dir: Path, *, pause: str, stages: list[str] = STAGES) -> subprocess.Popen[str]:
    """The run in a process group of its own, held at `pause` ("<task text>:<n>")."""
    marker = run_dir.parent / f"{run_dir.name}.paused"
    marker.unlink(missing_ok=True)
    env = {**os.environ, TEST_PAUSE: pause, TEST_PAUSE_MARKER: str(marker)}
    proc = subprocess.Popen(
        command(run_dir, stages),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    deadline = time.monotonic() + 240
    while not marker.exists():
        if proc.poll() is not None:
            raise AssertionError(f"the run ended before {pause}: {proc.communicate()[1]}")
        if time.monotonic() > deadline:
            kill_group(proc)
            raise AssertionError(f"the run never reached {pause}")
        time.sleep(0.1)
    return proc


def group_members(pgid: int) -> list[int]:
    """Live (not zombie) processes of a process group."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue  # ended while we looked
        if fields[0] != "Z" and int(fields[2]) == pgid:
            members.append(int(stat.parent.name))
    return members


def kill_group(proc: subprocess.Popen[str]) -> str:
    """kill -9 the run and every process it started; its stderr."""
    os.killpg(proc.pid, signal.SIGKILL)
    _, stderr = proc.communicate()
    deadline = time.monotonic() + 10
    while group_members(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not group_members(proc.pid), "a process of the killed run survived"
    return stderr


def finish(run_dir: Path, stages: list[str] = STAGES) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(command(run_dir, stages), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return proc


def without_seconds(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: without_seconds(v) for k, v in value.items() if k != "seconds"}
    if isinstance(value, list):
        return [without_seconds(v) for v in value]
    return value


def read(path: Path) -> Any:
    return json.loads(path.read_text())


def test_a_run_killed_twice_resumes_to_the_uninterrupted_summary(tmp_path: Path) -> None:
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    finish(whole)

    # 1: in the middle of the first stage's reference models, with the workers running.
    proc = start(killed, pause="reference models:1")
    assert len(group_members(proc.pid)) >= 3, "no worker processes to kill"
    kill_group(proc)
    assert [s["name"] for s in read(killed / "manifest.json")["stages"]] == ["train-ladp"]
    assert not (killed / "references" / "recipe.json").exists()

    # 2: in the middle of prune's DP fine-tune, before it wrote any file: no release yet.
    proc = start(killed, pause="prune: DP fine-tune 1/1:5")
    stderr = kill_group(proc)
    assert stderr.count("reusing") == 1  # train-ladp
    started = [r for r in read(killed / "releases.json")["releases"] if r["stage"] == "prune"]
    assert [r["status"] for r in started] == ["started"]
    assert not [p for p in (killed / "02-prune").rglob("*") if p.is_file()]

    # 3: resumed without --rerun-dp: train-ladp reused, prune run again, released once.
    resumed = finish(killed).stderr
    assert resumed.count("reusing") == 1 and "re-running a DP stage" not in resumed
    assert resumed.index("reusing") < resumed.index("[2/2] prune")
    releases = read(killed / "releases.json")["releases"]
    assert [(r["stage"], r["status"]) for r in releases] == [
        ("train-ladp", "done"),
        ("prune", "done"),
    ]
    for name in ("summary.json", "ledger.json", "manifest.json"):
        assert without_seconds(read(killed / name)) == without_seconds(read(whole / name)), name


def test_a_second_run_on_a_run_dir_in_use_is_refused_and_changes_nothing(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    holder = start(run_dir, pause="train-ladp:2", stages=["train-ladp"])
    try:
        before = snapshot(run_dir)
        second = subprocess.run(
            command(run_dir, ["train-ladp"]), capture_output=True, text=True, timeout=300
        )
        assert snapshot(run_dir) == before
    finally:
        kill_group(holder)
    assert second.returncode == 2
    lines = second.stderr.strip().splitlines()
    assert len(lines) == 1, second.stderr
    assert f"{run_dir} is in use by another privcomp process (pid {holder.pid}" in lines[0]
    assert second.stdout == ""
