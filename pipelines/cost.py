"""What a piece of work costs: wall seconds and peak resident memory above where it started.

Peak memory comes from Linux's VmHWM, whose high-water mark a process may reset (writing 5 to
/proc/self/clear_refs), so that the peak belongs to this piece of work and not to whatever ran
before it in the process. Where that is not available the whole process's peak (getrusage) is
reported, and `peak_memory_scope` says so.
"""

from __future__ import annotations

import resource
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def _status_kib(key: str) -> int | None:
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_peak() -> bool:
    try:
        _CLEAR_REFS.write_text("5")
    except OSError:
        return False
    return True


@dataclass
class Cost:
    seconds: float = 0.0
    peak_memory_bytes: int = 0
    peak_memory_scope: str = "work"  # work: above the start | process: the process's peak
    _start_rss: int = field(default=0, repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "seconds": self.seconds,
            "peak_memory_bytes": self.peak_memory_bytes,
            "peak_memory_scope": self.peak_memory_scope,
        }


@contextmanager
def measured() -> Iterator[Cost]:
    """Measure the body; the Cost is filled when it ends."""
    cost = Cost()
    scoped = _reset_peak() and _status_kib("VmRSS") is not None
    cost._start_rss = (_status_kib("VmRSS") or 0) * 1024
    start = time.perf_counter()
    try:
        yield cost
    finally:
        cost.seconds = time.perf_counter() - start
        peak = _status_kib("VmHWM") if scoped else None
        if peak is not None:
            cost.peak_memory_bytes = max(0, peak * 1024 - cost._start_rss)
        else:
            cost.peak_memory_scope = "process"
            cost.peak_memory_bytes = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
