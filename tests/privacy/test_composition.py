"""Composition of a history on one data set: Gaussian steps by one accountant, RDP curves in RDP,
(ε, δ) spends by basic composition."""

from __future__ import annotations

import numpy as np
import pytest

from privacy.composition import GaussianSteps, Guarantee, Opaque, RDPCurve, compose
from privacy.rdp import RDP_ORDERS, gaussian_rdp, rdp_epsilon

DELTA = 1e-5
LADP = (1.1, 0.1, 200)  # σ, q, steps
FINETUNE = (2.0, 0.1, 20)


def prv(history: list[tuple[float, float, int]]) -> float:
    from opacus.accountants import PRVAccountant

    accountant = PRVAccountant()
    accountant.history = list(history)
    return float(accountant.get_epsilon(delta=DELTA))


def test_gaussian_steps_compose_as_one_accountant_history() -> None:
    g = compose([GaussianSteps(*LADP), GaussianSteps(*FINETUNE)], delta=DELTA)
    assert (g.delta, g.accountant) == (DELTA, "prv")
    assert g.epsilon is not None
    assert g.epsilon == pytest.approx(prv([LADP, FINETUNE]), rel=1e-9)
    # One accountant over the whole history is tighter than adding the two ε's.
    assert g.epsilon < prv([LADP]) + prv([FINETUNE])


def test_a_spend_known_only_by_epsilon_delta_composes_by_addition() -> None:
    g = compose([GaussianSteps(*LADP), Opaque(0.5, 1e-6)], delta=DELTA)
    assert g.epsilon == pytest.approx(prv([LADP]) + 0.5, rel=1e-9)
    assert g.delta == pytest.approx(DELTA + 1e-6)


def test_an_rdp_curve_moves_the_whole_history_to_rdp() -> None:
    curve = gaussian_rdp(noise_multiplier=3.0, sample_rate=0.125, steps=240)
    g = compose([GaussianSteps(*LADP), RDPCurve(RDP_ORDERS, tuple(curve))], delta=DELTA)
    total = np.asarray(curve) + gaussian_rdp(
        noise_multiplier=LADP[0], sample_rate=LADP[1], steps=LADP[2]
    )
    assert g.accountant == "rdp"
    assert g.epsilon == pytest.approx(rdp_epsilon(total, delta=DELTA), rel=1e-12)
    with pytest.raises(ValueError, match="different orders"):
        compose([RDPCurve(RDP_ORDERS, tuple(curve)), RDPCurve((2.0,), (0.1,))], delta=DELTA)


def test_no_noise_is_not_private_and_no_steps_cost_nothing() -> None:
    assert compose([GaussianSteps(*LADP), GaussianSteps(0.0, 0.1, 3)], delta=DELTA).epsilon is None
    assert compose([GaussianSteps(0.0, 0.1, 0)], delta=DELTA) == Guarantee(0.0, DELTA, "prv")
    assert compose([], delta=DELTA, accountant="rdp") == Guarantee(0.0, DELTA, "rdp")


@pytest.mark.parametrize(("delta", "accountant"), [(0.0, "prv"), (1.0, "prv"), (DELTA, "gdp")])
def test_bad_inputs_are_one_line(delta: float, accountant: str) -> None:
    with pytest.raises(ValueError) as info:
        compose([GaussianSteps(*LADP)], delta=delta, accountant=accountant)
    assert "\n" not in str(info.value)
