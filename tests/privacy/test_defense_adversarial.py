"""Adversarial regularization: the inference adversary is trained alongside (its weights move, its
loss and accuracy are recorded per epoch), the classifier still learns digits."""

from __future__ import annotations

import pytest
import torch
from defense_testing import ARCH, PLAN, digits, held_out_accuracy

from privacy.defenses import DEFENSES, build_defense
from privacy.defenses.adversarial import ADVERSARY_SEED, AdversarialRegularization


def test_adversary_is_updated_and_the_model_still_learns() -> None:
    defense = build_defense("adversarial-regularization", weight=1.0, adversary_steps=2)
    assert isinstance(defense, AdversarialRegularization)
    data = digits()
    trained = defense.fit(ARCH, data["members"], public=data["public"], plan=PLAN, seed=0)
    adversary = trained.auxiliary["adversary"]
    initial = defense.adversary(10, seed=0 + ADVERSARY_SEED)
    moved = [
        not torch.equal(a, b)
        for a, b in zip(adversary.parameters(), initial.parameters(), strict=True)
    ]
    assert all(moved)
    assert len(trained.history) == PLAN.epochs
    for epoch in trained.history:
        assert 0 < epoch["adversary_loss"] < 5
        assert 0 <= epoch["adversary_accuracy"] <= 1
        assert epoch["member_gain"] < 0  # a mean log-probability
    assert not trained.model.training
    assert held_out_accuracy(trained.model) > 0.5


@pytest.mark.parametrize(
    "setting",
    [{"weight": -0.1}, {"weight": float("nan")}, {"adversary_steps": 0}, {"adversary_lr": 0.0}],
)
def test_bad_setting_is_a_one_line_error(setting: dict[str, float]) -> None:
    with pytest.raises(ValueError, match=f"adversarial-regularization: {next(iter(setting))}"):
        build_defense("adversarial-regularization", **setting)


def test_registered_as_scores() -> None:
    assert DEFENSES["adversarial-regularization"].release == "scores"


def test_the_classifier_works_against_the_adversary() -> None:
    """The min-max acts on f: with a large weight the adversary ends less sure that the members
    are members than it does against an undefended classifier (a flipped or detached gain
    would leave it as sure or surer)."""
    data = digits()

    def final_gain(weight: float) -> float:
        defense = AdversarialRegularization(weight=weight, adversary_steps=3, adversary_lr=1e-2)
        trained = defense.fit(ARCH, data["members"], public=data["public"], plan=PLAN, seed=0)
        return trained.history[-1]["member_gain"]

    assert final_gain(20.0) < final_gain(0.0) - 0.005
