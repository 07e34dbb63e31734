"""Executors run independent jobs (reference-model training, mirroring, audit trials, the defense
study's methods, a sweep's points): the `map(fn, jobs)` contract is attacks.executor.Executor,
which the attacks declare; these are its implementations, by name ([run] executor).

Jobs are picklable specifications (architecture record, seeds, arrays, paths), never modules, and
`fn` is a module-level function, so the same job runs in-process, in a worker process or on a Ray
worker. A job's results that are files are written by `fn` itself into the run-dir paths the job
names: a Ray worker on this machine writes the same paths; on a remote cluster they must be on a
filesystem every node mounts at the same path.

- `serial`: in this process, in order (tests, debugging; attacks.executor.SerialExecutor);
- `local`: a pool of worker processes on this machine (concurrent.futures), each limited to one
  torch thread so that N workers use N cores without oversubscription. Workers are spawned, not
  forked: forking a process whose torch/OpenMP thread pools are running can deadlock the child.
- `ray`: Ray tasks (one CPU and one torch thread each) on a single-node cluster it starts
  (`[run] ray_address = ""`) or on an existing cluster ("auto" | "HOST:PORT"). Ray is the
  optional extra `privcomp[ray]`, imported only when this executor maps.
"""

from __future__ import annotations

import io
import multiprocessing
import os
import pickle
import warnings
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from attacks.executor import Executor, SerialExecutor
from models.training import ProgressFn
from pipelines.errors import PrivcompError

J = TypeVar("J")
R = TypeVar("R")

__all__ = [
    "EXECUTORS",
    "Executor",
    "ExecutorSpec",
    "JobFailed",
    "LocalExecutor",
    "RayExecutor",
    "SerialExecutor",
    "check_executor",
    "close_executor",
    "make_executor",
]

RAY_MISSING = "the ray executor needs Ray: pip install 'privcomp[ray]'"


def _init_worker(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


class JobFailed(RuntimeError):
    """A job raised on a worker of a distributed executor: names the job and its error."""


class LocalExecutor:
    """A process pool on this machine; a failing job raises its error here."""

    def __init__(
        self, workers: int = 2, *, threads_per_worker: int = 1, fresh_workers: bool = False
    ) -> None:
        if workers < 1 or threads_per_worker < 1:
            raise PrivcompError("the local executor needs workers >= 1 and threads >= 1")
        self.workers = workers
        self.threads_per_worker = threads_per_worker
        # A new process per job: what a job measures of its process (peak memory) is its own.
        self.fresh_workers = fresh_workers

    def map(
        self, fn: Callable[[J], R], jobs: Sequence[J], *, progress: ProgressFn | None = None
    ) -> list[R]:
        if not jobs:
            return []
        results: dict[int, R] = {}
        with ProcessPoolExecutor(
            max_workers=min(self.workers, len(jobs)),
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_init_worker,
            initargs=(self.threads_per_worker,),
            max_tasks_per_child=1 if self.fresh_workers else None,
        ) as pool:
            futures = {pool.submit(fn, job): i for i, job in enumerate(jobs)}
            for future in as_completed(futures):
                try:
                    results[futures[future]] = future.result()
                except BaseException:
                    pool.shutdown(wait=False, cancel_futures=True)  # do not train the rest
                    raise
                if progress:
                    progress(len(results), len(jobs))
        return [results[i] for i in range(len(jobs))]


# ---- Ray ----------------------------------------------------------------------------------

# Arrays at least this large travel through Ray's object store, put once per map however many
# jobs hold them (every reference job holds the whole pool); smaller ones are pickled with the job.
SHARED_BYTES = 1 << 16


class _Packer(pickle.Pickler):
    """Pickles a job with its large numpy arrays left out, as keys into `arrays` (shared by all
    the jobs of one map, so that an array several jobs hold is stored once)."""

    def __init__(self, file: io.BytesIO, seen: dict[int, int], arrays: list[np.ndarray]) -> None:
        super().__init__(file, protocol=pickle.HIGHEST_PROTOCOL)
        self.seen, self.arrays, self.used = seen, arrays, set[int]()

    def persistent_id(self, obj: Any) -> int | None:
        if type(obj) is not np.ndarray or obj.nbytes < SHARED_BYTES:
            return None
        key = self.seen.get(id(obj))
        if key is None:
            key = self.seen[id(obj)] = len(self.arrays)
            self.arrays.append(obj)  # held until the map ends: ids stay unique
        self.used.add(key)
        return key


class _Unpacker(pickle.Unpickler):
    def __init__(self, file: io.BytesIO, arrays: dict[int, np.ndarray]) -> None:
        super().__init__(file)
        self.arrays = arrays

    def persistent_load(self, pid: Any) -> np.ndarray:
        return self.arrays[int(pid)]


def _pack(jobs: Sequence[Any]) -> tuple[list[tuple[bytes, tuple[int, ...]]], list[np.ndarray]]:
    seen: dict[int, int] = {}
    arrays: list[np.ndarray] = []
    packed = []
    for job in jobs:
        buffer = io.BytesIO()
        packer = _Packer(buffer, seen, arrays)
        packer.dump(job)
        packed.append((buffer.getvalue(), tuple(sorted(packer.used))))
    return packed, arrays


def _unpack(payload: bytes, keys: Sequence[int], arrays: Sequence[np.ndarray]) -> Any:
    # Ray hands out object-store arrays read-only (zero copy): the job gets writable copies,
    # as it would from a pickle, so that fn behaves as under the local executor.
    table = {k: np.array(a) for k, a in zip(keys, arrays, strict=True)}
    return _Unpacker(io.BytesIO(payload), table).load()


def _ray_task(
    fn: Callable[[Any], Any], payload: bytes, keys: tuple[int, ...], threads: int, *arrays: Any
) -> Any:
    """What a Ray worker runs: one torch thread (as the local pool's initializer sets), the job
    rebuilt around the arrays Ray resolved from the object store, fn(job)."""
    _init_worker(threads)
    return fn(_unpack(payload, keys, arrays))


def _attribute(job: Any, path: str) -> Any:
    for part in path.split("."):
        job = getattr(job, part, None)
    return job


def job_label(job: Any, position: int) -> str:
    """'job 3 (ReferenceJob runs/x/references/ref-003)': the position and what the job is."""
    kind = type(job).__name__
    for path in ("point.name", "method.name", "name", "out_dir", "index"):
        value = _attribute(job, path)
        if isinstance(value, str | int) and not isinstance(value, bool):
            return f"job {position} ({kind} {value})"
    return f"job {position} ({kind})"


@contextmanager
def _source_on_pythonpath() -> Iterator[None]:
    """PYTHONPATH, while a local cluster starts (its processes inherit it), led by the folder
    this privcomp is imported from: a source tree that is not the installed one runs as itself."""
    root = str(Path(__file__).resolve().parents[1])
    before = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join([root, *([before] if before else [])])
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = before


def _ray() -> Any:
    try:
        import ray
    except ImportError:  # also sys.modules["ray"] = None
        raise PrivcompError(RAY_MISSING) from None
    return ray


class RayExecutor:
    """Ray tasks, one CPU each; results in job order.

    address: "" (or None) starts a single-node cluster on this machine with `workers` CPUs, which
    `close()` shuts down; "auto" or "HOST:PORT" connects to a running cluster (`ray start
    --head`), which `close()` leaves running (only this process's connection ends).

    A caller that shares the process with other Ray users: Flower's simulation (train-fl) calls
    ray.shutdown() when it ends, which also ends this executor's connection. Every map therefore
    checks ray.is_initialized() and connects again when needed; a caller that calls Ray itself
    between maps must check ray.is_initialized() before each map in the same way. Two Ray
    sessions cannot be open in one process: when Ray is initialized already (by another user),
    this executor uses that session and leaves it running.

    A task whose worker process died (killed, out of memory, a crashed node) is submitted again,
    up to `max_retries` times, and `report` says so; a job that raises is not retried (its error
    would repeat): the map raises JobFailed naming the job (PrivcompError when the job's error is
    a user error), and the tasks not yet finished are cancelled.
    """

    def __init__(
        self,
        workers: int = 2,
        *,
        address: str | None = "",
        threads_per_worker: int = 1,
        fresh_workers: bool = False,
        max_retries: int = 2,
        report: Callable[[str], None] | None = None,
    ) -> None:
        if workers < 1 or threads_per_worker < 1 or max_retries < 0:
            raise PrivcompError(
                "the ray executor needs workers >= 1, threads >= 1 and max_retries >= 0"
            )
        self.workers = workers
        self.address = address or ""
        self.threads_per_worker = threads_per_worker
        self.fresh_workers = fresh_workers  # a new worker process per task (Ray's max_calls=1)
        self.max_retries = max_retries
        self.report = report or (lambda line: warnings.warn(line, RuntimeWarning, stacklevel=3))
        self.started = False  # this executor started the cluster it is connected to

    def __enter__(self) -> RayExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def connect(self) -> Any:
        """Ray, initialized: the session already open in this process, or a new one."""
        ray = _ray()
        if ray.is_initialized():
            return ray
        options: dict[str, Any] = {
            "include_dashboard": False,
            "log_to_driver": False,
            "logging_level": "warning",
        }
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # Ray's tip about GPU env vars
            if self.address:
                ray.init(address=self.address, **options)
                self.started = False
            else:
                # "local": a new single-node cluster even when another one (another user's `ray
                # start`) runs on this machine, sized to the workers asked for; its workers
                # import the same privcomp source as this process.
                with _source_on_pythonpath():
                    ray.init(address="local", num_cpus=self.workers, **options)
                self.started = True
        return ray

    def close(self) -> None:
        """Shut down the cluster this executor started; leave one it connected to running."""
        if not self.started:
            return
        self.started = False
        try:
            import ray
        except ImportError:
            return
        if ray.is_initialized():
            ray.shutdown()

    def map(
        self, fn: Callable[[J], R], jobs: Sequence[J], *, progress: ProgressFn | None = None
    ) -> list[R]:
        if not jobs:
            return []
        ray = self.connect()
        from ray.exceptions import NodeDiedError, RayTaskError, WorkerCrashedError

        task = ray.remote(
            num_cpus=1,
            max_retries=0,  # a dead worker's task is resubmitted below, where it is reported
            retry_exceptions=False,  # a job's own error would repeat
            max_calls=1 if self.fresh_workers else 0,
        )(_ray_task)
        packed, arrays = _pack(jobs)
        refs = [ray.put(a) for a in arrays]  # once each, however many jobs hold them

        def submit(i: int) -> Any:
            payload, keys = packed[i]
            args = [refs[k] for k in keys]
            return task.remote(fn, payload, keys, self.threads_per_worker, *args)

        pending = {submit(i): i for i in range(len(jobs))}
        attempts = dict.fromkeys(range(len(jobs)), 1)
        results: dict[int, R] = {}
        try:
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1)
                i = pending.pop(ready[0])
                try:
                    results[i] = ray.get(ready[0])
                except (WorkerCrashedError, NodeDiedError) as exc:
                    label = job_label(jobs[i], i)
                    if attempts[i] > self.max_retries:
                        raise JobFailed(
                            f"{label}: its worker died in each of {attempts[i]} attempt(s) "
                            f"({type(exc).__name__}); not retried again"
                        ) from None
                    attempts[i] += 1
                    self.report(f"task {i} retried after its worker died ({label})")
                    pending[submit(i)] = i
                    continue
                except RayTaskError as exc:
                    error = _job_error(jobs[i], i, exc)
                    raise error from error.__cause__
                if progress:
                    progress(len(results), len(jobs))
        finally:
            for ref in pending:  # do not train the rest after a failure
                ray.cancel(ref)
        return [results[i] for i in range(len(jobs))]


def _job_error(job: Any, position: int, exc: Any) -> Exception:
    from models.errors import UserError

    cause = getattr(exc, "cause", None)
    label = job_label(job, position)
    if isinstance(cause, UserError):
        return PrivcompError(f"{label}: {cause}")
    if cause is None:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return JobFailed(f"{label} failed on a Ray worker: {first}")
    error = JobFailed(f"{label} failed on a Ray worker: {type(cause).__name__}: {cause}")
    error.__cause__ = cause
    return error


# ---- by name ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ExecutorSpec:
    """What a factory may read ([run] executor, workers, ray_address, and the caller's needs)."""

    workers: int = 2
    address: str = ""
    fresh_workers: bool = False  # a new process per job (the study's and sweep's peak memory)
    report: Callable[[str], None] | None = None  # a line about a retried task


ExecutorFactory = Callable[[ExecutorSpec], Executor]
EXECUTORS: dict[str, ExecutorFactory] = {}


def register_executor(name: str, factory: ExecutorFactory) -> None:
    EXECUTORS[name] = factory


register_executor("serial", lambda spec: SerialExecutor())
register_executor(
    "local", lambda spec: LocalExecutor(spec.workers, fresh_workers=spec.fresh_workers)
)
register_executor(
    "ray",
    lambda spec: RayExecutor(
        spec.workers, address=spec.address, fresh_workers=spec.fresh_workers, report=spec.report
    ),
)


def make_executor(
    name: str,
    *,
    workers: int = 1,
    address: str = "",
    fresh_workers: bool = False,
    report: Callable[[str], None] | None = None,
) -> Executor:
    """An executor by name; close it with close_executor() when its work is done (the ray
    executor's own cluster is shut down there). `ray` without Ray installed is one line."""
    if name not in EXECUTORS:
        known = ", ".join(sorted(EXECUTORS))
        raise PrivcompError(f"unknown executor '{name}' (known: {known})")
    check_executor(name)  # the install line now, not at the first map
    spec = ExecutorSpec(workers, address, fresh_workers=fresh_workers, report=report)
    return EXECUTORS[name](spec)


def check_executor(name: str) -> None:
    """Refuse `ray` when Ray is not installed, without importing it (the local path never
    imports Ray)."""
    import importlib.util

    if name == "ray":
        try:
            found = importlib.util.find_spec("ray") is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            raise PrivcompError(RAY_MISSING)


def close_executor(executor: Executor | None) -> None:
    """Release what an executor holds (a Ray cluster it started); the others hold nothing."""
    close = getattr(executor, "close", None)
    if callable(close):
        close()
