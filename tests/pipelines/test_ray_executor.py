"""The ray executor: the same references as the local pool for the same seeds, a job's error
names the job, a task whose worker died is retried, and the one-line errors (Ray missing, the
settings that moved to [run]). One single-node cluster (2 CPUs) serves the whole module."""

from __future__ import annotations

import io
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console
from typer.testing import CliRunner

from attacks.references import ReferenceSet
from pipelines.cli import app
from pipelines.config import Config, load_config
from pipelines.context import RunContext
from pipelines.data import load_dataset, make_splits
from pipelines.errors import PrivcompError
from pipelines.evaluation import reference_set
from pipelines.executors import (
    RAY_MISSING,
    JobFailed,
    RayExecutor,
    _pack,
    make_executor,
)
from pipelines.progress import Reporter
from pipelines.settings.run import ModelSettings
from tests.conftest import TINY

ray = pytest.importorskip("ray")
HERE = Path(__file__).resolve().parent

FAST = [
    "run.model=mlp",
    "evaluate.shadow_models=4",
    "evaluate.shadow_epochs=2",
]


@pytest.fixture(scope="module")
def cluster() -> Iterator[RayExecutor]:
    """A single-node cluster of 2 CPUs, started once; its workers import this module (the
    jobs' functions below) from its folder."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PYTHONPATH", os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]))
        executor = RayExecutor(workers=2)
        executor.connect()
    assert executor.started
    yield executor
    executor.close()
    assert not ray.is_initialized()  # a later ray.init in this process starts afresh


# ---- jobs (run on the Ray workers) ---------------------------------------------------------


@dataclass(frozen=True)
class Named:
    name: str
    value: float


def fails_on_negative(job: Named) -> float:
    if job.value < 0:
        raise ValueError(f"negative value {job.value}")
    return job.value * 2


def dies_once(job: tuple[str, int]) -> int:
    """The first attempt's worker dies (no exception: the process ends); a retry returns."""
    marker, value = Path(job[0]), job[1]
    if not marker.exists():
        marker.write_text("died")
        os._exit(1)
    return value


def always_dies(job: int) -> int:
    os._exit(1)


def array_sum(job: tuple[np.ndarray, int]) -> float:
    x, i = job
    x[0] += 0  # the job's arrays are writable, as after a pickle
    return float(x[i].sum())


# ---- the executor --------------------------------------------------------------------------


def test_jobs_in_order_with_progress_and_shared_arrays_put_once(cluster: RayExecutor) -> None:
    pool = np.arange(40_000, dtype=np.float32).reshape(400, 100)
    jobs = [(pool, i) for i in range(5)]
    packed, arrays = _pack(jobs)
    assert len(arrays) == 1 and arrays[0] is pool  # one copy in the object store, not five
    assert all(len(payload) < 1000 and keys == (0,) for payload, keys in packed)
    steps: list[tuple[int, int]] = []
    out = cluster.map(array_sum, jobs, progress=lambda done, total: steps.append((done, total)))
    assert out == [float(pool[i].sum()) for i in range(5)]
    assert [d for d, _ in steps] == [1, 2, 3, 4, 5] and {t for _, t in steps} == {5}
    assert cluster.map(array_sum, []) == []


def test_a_job_that_raises_names_the_job(cluster: RayExecutor) -> None:
    jobs = [Named("first", 1.0), Named("bad", -1.0), Named("third", 3.0)]
    with pytest.raises(JobFailed, match=r"job 1 \(Named bad\) failed on a Ray worker: ") as info:
        cluster.map(fails_on_negative, jobs)
    assert "ValueError: negative value -1.0" in str(info.value)
    assert isinstance(info.value.__cause__, ValueError)
    assert cluster.map(fails_on_negative, jobs[:1]) == [2.0]  # the cluster still serves


def test_a_task_whose_worker_died_is_retried_and_reported(
    cluster: RayExecutor, tmp_path: Path
) -> None:
    lines: list[str] = []
    executor = RayExecutor(workers=2, report=lines.append)  # joins the module's session
    jobs = [(str(tmp_path / "never"), 0), (str(tmp_path / "marker"), 1)]
    (tmp_path / "never").write_text("")  # job 0 does not die
    assert executor.map(dies_once, jobs) == [0, 1]
    assert lines == ["task 1 retried after its worker died (job 1 (tuple))"]
    executor.close()  # it did not start the cluster: it leaves it running
    assert ray.is_initialized()
    with pytest.raises(JobFailed, match=r"job 0 \(int\): its worker died in each of 1 attempt"):
        RayExecutor(max_retries=0, report=lines.append).map(always_dies, [0])


def test_references_through_ray_are_the_local_pools(cluster: RayExecutor, tmp_path: Path) -> None:
    """The same seeds, one torch thread per task in both: the same reference models."""
    local = reference_set(make_ctx(tmp_path / "local", 'run.executor="local"', "run.workers=2"))
    ray_ctx = make_ctx(tmp_path / "ray", 'run.executor="ray"', "run.workers=2")
    through_ray = reference_set(ray_ctx)
    ray_ctx.close_executor()
    assert ray.is_initialized()  # the run's executor joined the module's cluster: left running
    np.testing.assert_array_equal(local.membership, through_ray.membership)
    np.testing.assert_allclose(through_ray.logits, local.logits, rtol=1e-5, atol=1e-6)
    # What the workers wrote into the run dir: each reference's model and the saved logits.
    for name in ("local", "ray"):
        assert len(list((tmp_path / name / "references").glob("ref-*/model.safetensors"))) == 4
    saved = ReferenceSet.load(tmp_path / "ray" / "references", augment="none")
    np.testing.assert_allclose(saved.logits, local.logits, rtol=1e-5, atol=1e-6)
    timing = (tmp_path / "ray" / "references" / "timing.json").read_text()
    assert '"executor": "ray"' in timing


def make_ctx(run_dir: Path, *overrides: str) -> RunContext:
    config = load_config(None, [*TINY, *FAST, *overrides])
    config = Config({**config.sections, "model": ModelSettings(values={"hidden": 32})})
    dataset = load_dataset("digits")
    splits = make_splits(len(dataset.y), seed=0, fractions=config.data.fractions())
    ctx = RunContext(run_dir, config, dataset, splits, Reporter(Console(file=io.StringIO())))
    ctx.history = ["train"]
    return ctx


# ---- one-line errors -----------------------------------------------------------------------


def test_ray_missing_is_one_line_naming_the_install(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` fails as if not installed
    monkeypatch.delenv("PRIVCOMP_DEBUG", raising=False)
    with pytest.raises(PrivcompError, match="pip install 'privcomp\\[ray\\]'"):
        make_executor("ray", workers=2)
    with pytest.raises(PrivcompError, match="the ray executor needs Ray"):
        RayExecutor().map(abs, [1])
    args = ["run", "train", "--executor", "ray", "--run-dir", str(tmp_path / "r")]
    result = CliRunner().invoke(app, [*args, *(f"--set={s}" for s in TINY)])
    assert result.exit_code == 2, result.output
    assert result.stderr.strip() == f"error: {RAY_MISSING}"
    assert not (tmp_path / "r").exists()  # refused before anything was written


@pytest.mark.parametrize("key", ["executor", "workers"])
def test_the_settings_that_moved_to_run_are_one_line(key: str, tmp_path: Path) -> None:
    value = '"local"' if key == "executor" else "2"
    with pytest.raises(PrivcompError, match=f"--set: evaluate.{key} moved to run.{key}$"):
        load_config(None, [f"evaluate.{key}={value}"])
    toml = tmp_path / "old.toml"
    toml.write_text(f"[evaluate]\n{key} = {value}\n")
    with pytest.raises(PrivcompError, match=f"old.toml: evaluate.{key} moved to run.{key}$"):
        load_config(toml)
    result = CliRunner().invoke(app, ["run", "train", "--config", str(toml)])
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [
        f"error: {toml}: evaluate.{key} moved to run.{key}"
    ]
