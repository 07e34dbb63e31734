"""Side-by-side timing on a shared, noisy machine: the methods run interleaved, A B C A B C …,
each round starting one method later (so that no method always runs first, alone, or after a
warm cache), and each method is reported as the median of its per-round ratio to the baseline
of the same round, with the ratios' min and max. A load spike then moves one round's ratios,
not one method's number."""

from __future__ import annotations

import statistics
import sys
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass
from typing import TypeVar

K = TypeVar("K", bound=Hashable)  # a method's name (any label)


@dataclass(frozen=True)
class Interleaved:
    seconds: float  # median over the rounds
    ratio: float  # median of the per-round ratios to the baseline
    low: float
    high: float

    def cell(self, digits: int = 2) -> str:
        return f"{self.ratio:.{digits}f} [{self.low:.{digits}f}, {self.high:.{digits}f}]"


def interleaved(
    methods: Mapping[K, Callable[[], float]], *, baseline: K, rounds: int
) -> dict[K, Interleaved]:
    """Each callable measures its method once and returns seconds (or any cost)."""
    if baseline not in methods:
        raise ValueError(f"baseline {baseline!r} is not one of the methods")
    names = list(methods)
    costs: dict[K, list[float]] = {n: [] for n in names}
    ratios: dict[K, list[float]] = {n: [] for n in names}
    for r in range(rounds):
        order = names[r % len(names) :] + names[: r % len(names)]
        measured = {n: methods[n]() for n in order}
        for n in names:
            costs[n].append(measured[n])
            ratios[n].append(measured[n] / measured[baseline])
        print(f"  round {r + 1}/{rounds} done", file=sys.stderr)
    return {
        n: Interleaved(
            statistics.median(costs[n]),
            statistics.median(ratios[n]),
            min(ratios[n]),
            max(ratios[n]),
        )
        for n in names
    }
