"""Calibrating σ: the values of the default run unchanged, never above the target, tight, after a
history (a DP fine-tune after training), and bad inputs."""

from __future__ import annotations

import math
from collections.abc import Sequence

import pytest

from privacy.accounting import ACCOUNTANTS, compute_epsilon
from privacy.calibration import calibrate_noise_multiplier
from privacy.composition import GaussianSteps, Mechanism, Opaque, RDPCurve, compose
from privacy.rdp import RDP_ORDERS, gaussian_rdp

DELTA = 1e-5

# Computed by calibrate_noise_multiplier before it took a history (commit 9d01436): the σ of
# every run must stay what it was, to the bit. The first is the default run's (q = 250/2000,
# 30 epochs); the fourth is below RDP's floor of ε, so PRV searches on its own.
GOLDEN = [
    ((3.0, 1e-5, 0.125, 240, "prv"), 2.8819825403533033),
    ((3.0, 1e-5, 0.125, 240, "rdp"), 3.0815649103253087),
    ((1.0, 1e-5, 1.0, 5, "prv"), 8.439957140244747),
    ((0.05, 1e-5, 0.02, 100, "prv"), 14.363041537382244),
    ((0.5, 1e-3, 0.3, 7, "rdp"), 4.572332198957436),
]
TRAINING = GaussianSteps(GOLDEN[0][1], 0.125, 240)  # the default run's training


@pytest.mark.parametrize(("args", "sigma"), GOLDEN)
def test_without_a_history_sigma_is_the_old_one_to_the_bit(
    args: tuple[float, float, float, int, str], sigma: float
) -> None:
    target, delta, q, steps, accountant = args
    found = calibrate_noise_multiplier(
        target_epsilon=target, delta=delta, sample_rate=q, steps=steps, accountant=accountant
    )
    assert found == sigma


@pytest.mark.parametrize("accountant", ACCOUNTANTS)
@pytest.mark.parametrize("target", [0.5, 2.0, 6.0])
def test_calibration_never_above_target(accountant: str, target: float) -> None:
    budget = {"delta": DELTA, "sample_rate": 0.1, "steps": 20, "accountant": accountant}
    sigma = calibrate_noise_multiplier(target_epsilon=target, **budget)
    eps = compute_epsilon(noise_multiplier=sigma, **budget)
    assert eps <= target
    # ...and tight: 1% less noise already overspends.
    assert compute_epsilon(noise_multiplier=0.99 * sigma, **budget) > target


def test_calibration_full_batch() -> None:
    sigma = calibrate_noise_multiplier(target_epsilon=1.0, delta=DELTA, sample_rate=1.0, steps=5)
    assert compute_epsilon(noise_multiplier=sigma, sample_rate=1.0, steps=5, delta=DELTA) <= 1.0


def composed(history: Sequence[Mechanism], steps: GaussianSteps, accountant: str) -> float:
    eps = compose([*history, steps], delta=DELTA, accountant=accountant).epsilon
    assert eps is not None
    return eps


HISTORIES: dict[str, list[Mechanism]] = {
    "gaussian": [GaussianSteps(1.0, 0.1, 50)],
    "with an (ε, δ) spend": [GaussianSteps(1.0, 0.1, 50), Opaque(0.5, 1e-6)],
    "with an RDP curve": [
        RDPCurve(RDP_ORDERS, tuple(gaussian_rdp(noise_multiplier=1.0, sample_rate=0.1, steps=50)))
    ],
}


@pytest.mark.parametrize("name", HISTORIES)
def test_after_a_history_sigma_fits_and_half_a_percent_less_does_not(name: str) -> None:
    # RDP keeps these quick; the PRV path follows.
    history = HISTORIES[name]
    base = compose(history, delta=DELTA, accountant="rdp").epsilon
    assert base is not None
    target = base + 1.0
    sigma = calibrate_noise_multiplier(
        target_epsilon=target,
        delta=DELTA,
        sample_rate=0.1,
        steps=10,
        accountant="rdp",
        history=history,
    )
    fits = composed(history, GaussianSteps(sigma, 0.1, 10), "rdp")
    assert fits <= target < composed(history, GaussianSteps(0.995 * sigma, 0.1, 10), "rdp")


@pytest.mark.parametrize(("target", "steps"), [(4.0, 24), (3.05, 240)])
def test_a_fine_tune_after_the_default_training_fits_the_composed_target(
    target: float, steps: int
) -> None:
    # PRV bounds the training by 2.99, RDP by 3.25: at 3.05, RDP cannot give PRV its start and
    # PRV searches on its own.
    sigma = calibrate_noise_multiplier(
        target_epsilon=target, delta=DELTA, sample_rate=0.125, steps=steps, history=[TRAINING]
    )
    fits = composed([TRAINING], GaussianSteps(sigma, 0.125, steps), "prv")
    assert fits <= target < composed([TRAINING], GaussianSteps(0.995 * sigma, 0.125, steps), "prv")


def test_a_history_that_already_spends_the_target_is_one_line() -> None:
    history = [GaussianSteps(1.0, 0.1, 50)]
    base = compose(history, delta=DELTA, accountant="rdp").epsilon
    assert base is not None
    with pytest.raises(ValueError, match="already spends") as info:
        calibrate_noise_multiplier(
            target_epsilon=base * 0.9,
            delta=DELTA,
            sample_rate=0.1,
            steps=10,
            accountant="rdp",
            history=history,
        )
    assert "\n" not in str(info.value)
    with pytest.raises(ValueError, match="already spends"):  # not private at all
        calibrate_noise_multiplier(
            target_epsilon=8.0,
            delta=DELTA,
            sample_rate=0.1,
            steps=10,
            history=[GaussianSteps(0.0, 0.1, 5)],
        )


@pytest.mark.parametrize(
    "kwargs",
    [
        {"target_epsilon": 0.0},
        {"target_epsilon": -1.0},
        {"target_epsilon": math.inf},
        {"delta": 0.0},
        {"delta": 1.0},
        {"sample_rate": 0.0},
        {"sample_rate": 1.5},
        {"steps": 0},
        {"accountant": "gdp"},
    ],
)
def test_calibration_bad_inputs(kwargs: dict) -> None:
    args = {"target_epsilon": 1.0, "delta": DELTA, "sample_rate": 0.1, "steps": 10}
    with pytest.raises(ValueError) as info:
        calibrate_noise_multiplier(**{**args, **kwargs})
    assert "\n" not in str(info.value)


def test_impossible_budget_is_a_value_error() -> None:
    # PRV's ε carries a 0.01 error band, so no σ gets below it.
    with pytest.raises(ValueError, match="too small"):
        calibrate_noise_multiplier(target_epsilon=1e-3, delta=DELTA, sample_rate=0.1, steps=10)
