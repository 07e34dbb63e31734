"""Executors run independent jobs (reference-model training, mirroring, audit trials): the
`map(fn, jobs)` contract is attacks.executor.Executor, which the attacks declare; these are its
implementations, by name (evaluate.executor).

Jobs are picklable specifications (architecture record, seeds, arrays, paths), never modules, and
`fn` is a module-level function, so the same job runs in-process or in a worker process.

- `serial`: in this process, in order (tests, debugging; attacks.executor.SerialExecutor);
- `local`: a pool of worker processes on this machine (concurrent.futures), each limited to one
  torch thread so that N workers use N cores without oversubscription. Workers are spawned, not
  forked: forking a process whose torch/OpenMP thread pools are running can deadlock the child.

A distributed executor (Ray) can be added to EXECUTORS later with the same `map` contract.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import TypeVar

from attacks.executor import Executor, SerialExecutor
from models.training import ProgressFn
from pipelines.errors import PrivcompError

J = TypeVar("J")
R = TypeVar("R")

__all__ = ["EXECUTORS", "Executor", "LocalExecutor", "SerialExecutor", "make_executor"]


def _init_worker(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


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


ExecutorFactory = Callable[[int], Executor]  # workers -> executor
EXECUTORS: dict[str, ExecutorFactory] = {}


def register_executor(name: str, factory: ExecutorFactory) -> None:
    EXECUTORS[name] = factory


register_executor("serial", lambda workers: SerialExecutor())
register_executor("local", lambda workers: LocalExecutor(workers))


def make_executor(name: str, *, workers: int = 1) -> Executor:
    if name not in EXECUTORS:
        known = ", ".join(sorted(EXECUTORS))
        raise PrivcompError(f"unknown executor '{name}' (known: {known})")
    return EXECUTORS[name](workers)
