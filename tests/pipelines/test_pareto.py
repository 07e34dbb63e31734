"""Pareto selection on hand-made points."""

from __future__ import annotations

import pytest

from pipelines.pareto import pareto_front

POINTS = [
    {"acc": 0.90, "bytes": 100, "tpr": 0.05},  # 0: front (most accurate)
    {"acc": 0.85, "bytes": 50, "tpr": 0.05},  # 1: front (smaller)
    {"acc": 0.85, "bytes": 60, "tpr": 0.05},  # 2: dominated by 1
    {"acc": 0.80, "bytes": 50, "tpr": 0.01},  # 3: front (leaks least)
    {"acc": 0.80, "bytes": 50, "tpr": 0.02},  # 4: dominated by 3
    {"acc": 0.90, "bytes": 100, "tpr": 0.05},  # 5: equal to 0: both on the front
]


def test_the_front_is_what_no_point_beats_everywhere() -> None:
    front = pareto_front(POINTS, maximize=["acc"], minimize=["bytes", "tpr"])
    assert front == [0, 1, 3, 5]
    assert pareto_front(POINTS, maximize=["acc"]) == [0, 5]
    assert pareto_front(POINTS, minimize=["bytes"]) == [1, 3, 4]
    assert pareto_front([], maximize=["acc"]) == []


def test_bad_objectives_are_refused() -> None:
    with pytest.raises(ValueError, match="at least one objective"):
        pareto_front(POINTS)
    with pytest.raises(ValueError, match="maximised and minimised"):
        pareto_front(POINTS, maximize=["acc"], minimize=["acc"])
    with pytest.raises(ValueError, match="lacks objective"):
        pareto_front(POINTS, maximize=["latency"])
