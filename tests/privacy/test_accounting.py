"""Accounting: golden values, the budget search, bad inputs (calibration: test_calibration)."""

from __future__ import annotations

import math

import pytest

from privacy.accounting import compute_epsilon, max_steps_within_budget

DELTA = 1e-5


def test_rdp_golden_value() -> None:
    eps = compute_epsilon(
        noise_multiplier=1.5, sample_rate=0.04, steps=2250, delta=DELTA, accountant="rdp"
    )
    assert eps == pytest.approx(7.3291, abs=1e-4)


def test_prv_is_tighter_than_rdp() -> None:
    common = {"noise_multiplier": 1.0, "sample_rate": 0.1, "steps": 100, "delta": DELTA}
    prv = compute_epsilon(**common, accountant="prv")
    rdp = compute_epsilon(**common, accountant="rdp")
    assert 0 < prv < rdp


def test_max_steps_within_budget_is_the_largest() -> None:
    common = {"noise_multiplier": 1.0, "sample_rate": 0.1, "delta": DELTA, "accountant": "prv"}
    steps = max_steps_within_budget(target_epsilon=3.0, limit=60, **common)
    assert 5 < steps < 60
    assert compute_epsilon(steps=steps, **common) <= 3.0
    assert compute_epsilon(steps=steps + 1, **common) > 3.0
    assert max_steps_within_budget(target_epsilon=3.0, limit=steps - 3, **common) == steps - 3
    assert max_steps_within_budget(target_epsilon=1e-3, limit=10, **common) == 0


def test_edge_values() -> None:
    common = {"sample_rate": 0.1, "delta": DELTA}
    assert compute_epsilon(noise_multiplier=1.0, steps=0, **common) == 0.0
    assert compute_epsilon(noise_multiplier=0.0, steps=3, **common) == math.inf


def test_huge_prv_grid_falls_back_to_rdp_bound() -> None:
    # PRV would need ~5e8 grid points here (gigabytes); the RDP bound is still valid.
    common = {"noise_multiplier": 0.3, "sample_rate": 0.01, "steps": 100_000, "delta": DELTA}
    assert compute_epsilon(**common, accountant="prv") == compute_epsilon(
        **common, accountant="rdp"
    )


def test_compute_epsilon_bad_inputs() -> None:
    with pytest.raises(ValueError):
        compute_epsilon(noise_multiplier=-1.0, sample_rate=0.1, steps=1, delta=DELTA)
    with pytest.raises(ValueError):
        compute_epsilon(noise_multiplier=1.0, sample_rate=0.1, steps=-1, delta=DELTA)
    with pytest.raises(ValueError):
        max_steps_within_budget(
            target_epsilon=1.0, noise_multiplier=1.0, sample_rate=0.1, delta=DELTA, limit=-1
        )
