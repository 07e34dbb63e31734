"""Mixup + MMD: the class-conditional MMD² penalty is non-zero, falls once the model has
learnt and is smaller than without it; the model still learns digits."""

from __future__ import annotations

import pytest
import torch
from defense_testing import ARCH, PLAN, digits, held_out_accuracy

from privacy.defenses import DEFENSES, build_defense
from privacy.defenses.mixup_mmd import MixupMMD, class_conditional_mmd2, gaussian_mmd2


def penalties(weight: float) -> tuple[list[float], float]:
    defense = build_defense("mixup-mmd", weight=weight)
    assert isinstance(defense, MixupMMD)
    data = digits()
    trained = defense.fit(ARCH, data["members"], public=data["public"], plan=PLAN, seed=0)
    return [epoch["mmd"] for epoch in trained.history], held_out_accuracy(trained.model)


def test_penalty_acts_and_the_model_still_learns() -> None:
    with_penalty, accuracy = penalties(10.0)
    without, _ = penalties(0.0)
    assert len(with_penalty) == PLAN.epochs
    assert min(with_penalty) > 0
    # Outputs start near uniform on members and public alike (MMD ≈ 0); the gap opens as the
    # model learns, and the penalty then closes it: the last epoch is below the peak, and below
    # the same training without the penalty.
    assert with_penalty[-1] < 0.9 * max(with_penalty)
    assert with_penalty[-1] < 0.9 * without[-1]
    assert accuracy > 0.5


def test_mmd_is_zero_for_equal_samples_and_grows_with_their_distance() -> None:
    a = torch.eye(3)
    assert float(gaussian_mmd2(a, a)) == pytest.approx(0.0, abs=1e-6)
    near, far = gaussian_mmd2(a, a + 0.1), gaussian_mmd2(a, a + 1.0)
    assert 0 < float(near) < float(far)
    # class by class: one class's outputs differ, the other's are equal
    y = torch.tensor([0, 1, 1])
    assert float(class_conditional_mmd2(a, y, a, torch.tensor([1, 0, 0]))) > 0
    assert float(class_conditional_mmd2(a, y, a, y)) == pytest.approx(0.0, abs=1e-6)
    assert float(class_conditional_mmd2(a, y, a, torch.tensor([2, 2, 2]))) == 0.0  # no class shared


@pytest.mark.parametrize("setting", [{"alpha": 0.0}, {"alpha": -1.0}, {"weight": -0.5}])
def test_bad_setting_is_a_one_line_error(setting: dict[str, float]) -> None:
    with pytest.raises(ValueError, match=f"mixup-mmd: {next(iter(setting))}"):
        build_defense("mixup-mmd", **setting)


def test_registered_as_scores() -> None:
    assert DEFENSES["mixup-mmd"].release == "scores"
