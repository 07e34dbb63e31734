"""Progress display for long work: rich bars on a terminal, nothing when output is captured."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from models.training import ProgressFn

TEST_PAUSE = "PRIVCOMP_TEST_PAUSE"
TEST_PAUSE_MARKER = "PRIVCOMP_TEST_PAUSE_MARKER"


class Reporter:
    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console(stderr=True)

    def info(self, message: str) -> None:
        """message is rich markup: text that comes from the user (paths, names, settings) goes
        through rich.markup.escape, or a "[section]" in it is eaten as a tag."""
        self.console.print(message, highlight=False, soft_wrap=True)  # paths stay one line

    @contextmanager
    def task(self, description: str) -> Iterator[ProgressFn]:
        """A bar for one loop; the yielded callback takes (done, total)."""
        columns = (
            TextColumn("  {task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
        )
        pause = _test_pause(description)
        with Progress(*columns, console=self.console, transient=False) as bar:
            task_id = bar.add_task(escape(description), total=None)

            def update(done: int, total: int) -> None:
                bar.update(task_id, completed=done, total=total)
                if pause is not None:
                    pause()

            yield update

    @contextmanager
    def untimed(self, description: str) -> Iterator[None]:
        """Work whose duration is a secret (a private search's number of repetitions): a
        spinner with no count and no elapsed time, removed when the work ends."""
        columns = (TextColumn("  {task.description}"), BarColumn())
        with Progress(*columns, console=self.console, transient=True) as bar:
            bar.add_task(escape(description), total=None)
            yield


def _test_pause(description: str) -> Callable[[], None] | None:
    """Test-only, off unless PRIVCOMP_TEST_PAUSE is set: tests/pipelines/test_run_contract.py
    kills a run with kill -9 in the middle of known work. With PRIVCOMP_TEST_PAUSE="<text>:<n>",
    the n-th progress update of a task whose description contains <text> writes the file named
    by PRIVCOMP_TEST_PAUSE_MARKER and then holds this process until it is killed."""
    text, _, count = os.environ.get(TEST_PAUSE, "").rpartition(":")
    if not text or text not in description:
        return None
    updates = 0

    def pause() -> None:
        nonlocal updates
        updates += 1
        if updates == int(count):
            Path(os.environ[TEST_PAUSE_MARKER]).write_text(description)
            while True:
                time.sleep(60)

    return pause
