"""What the attacks need to map work over references: an `Executor` (`map(fn, jobs)`).

The attacks declare it because they own the jobs: each reference (or mirrored reference) is a
picklable specification (architecture record, seeds, arrays, paths) and `fn` a module-level
function, so the same job runs here or in another process. `SerialExecutor` runs them in this
process; pipelines.executors adds a process pool and Ray tasks under the same contract.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol, TypeVar

from models.training import ProgressFn

J = TypeVar("J")
R = TypeVar("R")


class Executor(Protocol):
    def map(
        self, fn: Callable[[J], R], jobs: Sequence[J], *, progress: ProgressFn | None = None
    ) -> list[R]:
        """fn(job) for every job; results in the order of `jobs`; progress(done, total)."""
        ...


class SerialExecutor:
    """Runs every job here, one after another."""

    def map(
        self, fn: Callable[[J], R], jobs: Sequence[J], *, progress: ProgressFn | None = None
    ) -> list[R]:
        out = []
        for i, job in enumerate(jobs):
            out.append(fn(job))
            if progress:
                progress(i + 1, len(jobs))
        return out
