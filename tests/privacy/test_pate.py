"""PATE: the data-independent GNMax accountant against a hand computation, shards, noisy max."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from models.zoo import seeded_model
from pipelines.data import load_dataset, make_splits
from privacy.pate import (
    ORDERS,
    PATEConfig,
    gnmax,
    gnmax_noise_multiplier,
    gnmax_rdp,
    pate_epsilon,
    pate_label,
    pate_spend,
    shards,
    teacher_predictions,
    teacher_votes,
)

DELTA = 1e-5


def hand_epsilon(queries: int, sigma: float, delta: float) -> float:
    """By hand: RDP of one GNMax answer is α/σ² (Gaussian, sensitivity √2), T answers add up,
    and (ε, δ) = min over α of T·α/σ² + log((α-1)/α) - (log δ + log α)/(α-1)."""
    best = math.inf
    for a in ORDERS:
        rdp = queries * a / sigma**2
        best = min(best, rdp + math.log((a - 1) / a) - (math.log(delta) + math.log(a)) / (a - 1))
    return best


@pytest.mark.parametrize(("queries", "sigma"), [(1, 40.0), (3, 20.0), (5, 10.0), (200, 20.0)])
def test_epsilon_matches_a_hand_computation(queries: int, sigma: float) -> None:
    assert pate_epsilon(sigma=sigma, queries=queries, delta=DELTA) == pytest.approx(
        hand_epsilon(queries, sigma, DELTA), rel=1e-12
    )


def test_three_queries_golden_value() -> None:
    # T = 3, σ = 20: RDP 3α/400; the best listed order is α = 34, giving ε = 0.4672
    eps = pate_epsilon(sigma=20.0, queries=3, delta=DELTA)
    a = 34
    by_hand = 3 * a / 400 + math.log((a - 1) / a) - (math.log(DELTA) + math.log(a)) / (a - 1)
    assert eps == pytest.approx(by_hand, rel=1e-12)
    assert eps == pytest.approx(0.4672, abs=1e-4)


def test_rdp_is_that_of_a_gaussian_with_multiplier_sigma_over_root_two() -> None:
    from opacus.accountants.analysis.rdp import compute_rdp

    sigma, queries = 12.0, 7
    ours = gnmax_rdp(sigma=sigma, queries=queries)
    gaussian = compute_rdp(
        q=1.0, noise_multiplier=gnmax_noise_multiplier(sigma), steps=queries, orders=list(ORDERS)
    )
    np.testing.assert_allclose(ours, gaussian, rtol=1e-12)


def test_more_queries_or_less_noise_cost_more() -> None:
    base = pate_epsilon(sigma=20.0, queries=100, delta=DELTA)
    assert pate_epsilon(sigma=20.0, queries=200, delta=DELTA) > base
    assert pate_epsilon(sigma=10.0, queries=100, delta=DELTA) > base
    assert pate_epsilon(sigma=20.0, queries=0, delta=DELTA) == 0.0


def test_spend_is_a_gaussian_history_entry_for_the_ledger() -> None:
    spend = pate_spend(PATEConfig(sigma=20.0, queries=200, delta=DELTA))
    d = spend.to_dict()
    assert d["noise_multiplier"] == pytest.approx(20.0 / math.sqrt(2))
    assert (d["sample_rate"], d["steps"], d["accountant"]) == (1.0, 200, "rdp")
    assert d["epsilon"] == pytest.approx(hand_epsilon(200, 20.0, DELTA))


def test_shards_are_disjoint_and_cover_everything() -> None:
    parts = shards(103, 10, seed=0)
    joined = np.concatenate(parts)
    assert len(parts) == 10 and sorted(joined.tolist()) == list(range(103))
    assert {len(p) for p in parts} == {10, 11}


def test_gnmax_is_the_vote_argmax_with_little_noise_and_random_with_much() -> None:
    votes = np.array([[9, 1, 0], [0, 2, 8], [5, 5, 0]] * 100)
    rng = np.random.default_rng(0)
    quiet = gnmax(votes, sigma=1e-6, rng=rng)
    assert (quiet[:2] == [0, 2]).all()
    loud = gnmax(votes, sigma=1e4, rng=rng)
    assert 0.2 < (loud == 0).mean() < 0.5  # votes drown: about a third each


def test_teacher_votes_count_predictions() -> None:
    class Fixed(torch.nn.Module):
        def __init__(self, label: int) -> None:
            super().__init__()
            self.label = label
            self.p = torch.nn.Parameter(torch.zeros(1))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out = torch.zeros(len(x), 3)
            out[:, self.label] = 1.0
            return out

    teachers: list[torch.nn.Module] = [Fixed(0), Fixed(2), Fixed(2)]
    predictions = teacher_predictions(teachers, np.zeros((4, 1, 2, 2), np.float32))
    votes = teacher_votes(predictions, num_classes=3)
    assert votes.tolist() == [[1, 0, 2]] * 4


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"teachers": 1}, "at least 2 teachers"),
        ({"sigma": 0.0}, "sigma"),
        ({"queries": 1000}, "queries"),
        ({"delta": 0.5}, "delta"),
    ],
)
def test_bad_config_is_rejected(changes: dict[str, float], message: str) -> None:
    config = PATEConfig(**{**PATEConfig().__dict__, **changes})
    with pytest.raises(ValueError, match=message):
        config.check(members=500, public=200)


def test_pate_labels_public_queries_with_teachers_from_private_shards() -> None:
    data = load_dataset("digits")
    splits = make_splits(len(data.y), seed=0)
    members, public = splits["members"], splits["public"][:40]
    config = PATEConfig(teachers=4, sigma=1.0, queries=40, teacher_epochs=15, delta=1e-4)

    def make(i: int) -> torch.nn.Module:
        return seeded_model("cnn", seed=i, in_shape=(1, 8, 8), num_classes=10, width=8)

    result = pate_label(
        make,
        (data.x[members], data.y[members]),
        (data.x[public], data.y[public]),
        num_classes=10,
        config=config,
        seed=0,
    )
    assert result.labels.shape == (40,)
    assert len(result.teacher_accuracy) == 4
    assert (result.labels == data.y[public]).mean() > 0.5  # 4 weak teachers, little noise
    assert result.spend.epsilon == pytest.approx(hand_epsilon(40, 1.0, 1e-4))
