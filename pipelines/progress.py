"""Progress display for long work: rich bars on a terminal, nothing when output is captured."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from models.training import ProgressFn


class Reporter:
    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console(stderr=True)

    def info(self, message: str) -> None:
        self.console.print(message, highlight=False)

    @contextmanager
    def task(self, description: str) -> Iterator[ProgressFn]:
        """A bar for one loop; the yielded callback takes (done, total)."""
        columns = (
            TextColumn("  {task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
        )
        with Progress(*columns, console=self.console, transient=False) as bar:
            task_id = bar.add_task(description, total=None)

            def update(done: int, total: int) -> None:
                bar.update(task_id, completed=done, total=total)

            yield update

    @contextmanager
    def untimed(self, description: str) -> Iterator[None]:
        """Work whose duration is a secret (a private search's number of repetitions): a
        spinner with no count and no elapsed time, removed when the work ends."""
        columns = (TextColumn("  {task.description}"), BarColumn())
        with Progress(*columns, console=self.console, transient=True) as bar:
            bar.add_task(description, total=None)
            yield
