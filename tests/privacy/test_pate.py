"""PATE: the data-independent GNMax accountant against a hand computation, the per-record shard
rule (one member added or removed changes one teacher only), secure noise, noisy max."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pytest
import torch

from models.zoo import seeded_model
from pipelines.data import load_dataset, make_splits
from privacy.pate import (
    PATEConfig,
    assign_teachers,
    gnmax,
    gnmax_noise_multiplier,
    gnmax_rdp,
    pate_epsilon,
    pate_label,
    pate_spend,
    record_teacher,
    shards,
    teacher_predictions,
    teacher_votes,
    train_teachers,
)
from privacy.rdp import RDP_ORDERS

DELTA = 1e-5
KEY = 12345

# shard_fn(x, y, teachers) -> one index array per teacher
ShardFn = Callable[[np.ndarray, np.ndarray, int], list[np.ndarray]]


def hand_epsilon(queries: int, sigma: float, delta: float) -> float:
    """By hand: RDP of one GNMax answer is α/σ² (Gaussian, sensitivity √2), T answers add up,
    and (ε, δ) = min over α of T·α/σ² + log((α-1)/α) - (log δ + log α)/(α-1)."""
    best = math.inf
    for a in RDP_ORDERS:
        rdp = queries * a / sigma**2
        best = min(best, rdp + math.log((a - 1) / a) - (math.log(delta) + math.log(a)) / (a - 1))
    return best


@pytest.fixture(scope="module")
def digits() -> tuple[np.ndarray, np.ndarray]:
    data = load_dataset("digits")
    return data.x, data.y


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
        q=1.0,
        noise_multiplier=gnmax_noise_multiplier(sigma),
        steps=queries,
        orders=list(RDP_ORDERS),
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


# --- the shard rule ---------------------------------------------------------------------------


def hashed(key: int = KEY) -> ShardFn:
    return lambda x, y, teachers: shards(x, y, teachers, key=key)


def permuted(seed: int = 0) -> ShardFn:
    """The old rule: slices of a seeded permutation of range(n). Kept here as the mutant that
    the neighbour check must reject."""

    def rule(x: np.ndarray, y: np.ndarray, teachers: int) -> list[np.ndarray]:
        order = np.random.default_rng(seed).permutation(len(x))
        return [np.sort(part) for part in np.array_split(order, teachers)]

    return rule


def teacher_data(
    rule: ShardFn, x: np.ndarray, y: np.ndarray, teachers: int
) -> list[tuple[np.ndarray, np.ndarray]]:
    """What each teacher is trained on: its records as arrays, in order."""
    return [(x[idx], y[idx]) for idx in rule(x, y, teachers)]


def changed_teachers(
    before: list[tuple[np.ndarray, np.ndarray]], after: list[tuple[np.ndarray, np.ndarray]]
) -> list[int]:
    """Teachers whose training arrays are not identical (shape, order, bits)."""
    return [
        t
        for t, ((xb, yb), (xa, ya)) in enumerate(zip(before, after, strict=True))
        if not (np.array_equal(xb, xa) and np.array_equal(yb, ya))
    ]


def neighbours_change_one_teacher(
    rule: ShardFn,
    x: np.ndarray,
    y: np.ndarray,
    teachers: int,
    *,
    removals: list[int],
    additions: list[tuple[int, np.ndarray, int]],
) -> bool:
    """True when every neighbour (one member removed, or one record inserted at a position)
    changes the training data of at most one teacher and leaves the others bitwise equal."""
    base = teacher_data(rule, x, y, teachers)
    for i in removals:
        keep = np.delete(np.arange(len(x)), i)
        if len(changed_teachers(base, teacher_data(rule, x[keep], y[keep], teachers))) > 1:
            return False
    for position, new_x, new_y in additions:
        grown_x = np.insert(x, position, new_x, axis=0)
        grown_y = np.insert(y, position, new_y)
        if len(changed_teachers(base, teacher_data(rule, grown_x, grown_y, teachers))) > 1:
            return False
    return True


def neighbour_cases(
    x: np.ndarray, y: np.ndarray, extra: tuple[np.ndarray, np.ndarray]
) -> dict[str, list]:
    n = len(x)
    removals = [0, 1, n // 3, n // 2, n - 2, n - 1]
    ex, ey = extra
    additions = [(0, ex[0], int(ey[0])), (n // 2, ex[1], int(ey[1])), (n, ex[2], int(ey[2]))]
    return {"removals": removals, "additions": additions}


@pytest.mark.parametrize("teachers", [2, 7, 25])
def test_adding_or_removing_one_member_changes_one_teachers_data(
    digits: tuple[np.ndarray, np.ndarray], teachers: int
) -> None:
    x, y = digits[0][:300], digits[1][:300]
    cases = neighbour_cases(x, y, (digits[0][300:303], digits[1][300:303]))
    assert neighbours_change_one_teacher(hashed(), x, y, teachers, **cases)
    # and exactly the removed member's teacher is the one that changes
    owner = assign_teachers(x, y, teachers, key=KEY)
    base = teacher_data(hashed(), x, y, teachers)
    for i in cases["removals"]:
        keep = np.delete(np.arange(len(x)), i)
        assert changed_teachers(base, teacher_data(hashed(), x[keep], y[keep], teachers)) == [
            owner[i]
        ]


def test_the_check_rejects_the_old_permutation_shards(
    digits: tuple[np.ndarray, np.ndarray],
) -> None:
    # Mutation: a permutation of range(n) sliced into shards reshuffles every shard when one
    # member leaves, so the same check must fail on it (it holds only for replace-one).
    x, y = digits[0][:300], digits[1][:300]
    cases = neighbour_cases(x, y, (digits[0][300:303], digits[1][300:303]))
    assert not neighbours_change_one_teacher(permuted(), x, y, 7, **cases)
    base = teacher_data(permuted(), x, y, 7)
    keep = np.arange(1, len(x))
    assert len(changed_teachers(base, teacher_data(permuted(), x[keep], y[keep], 7))) > 1


def test_a_records_teacher_does_not_depend_on_its_position(
    digits: tuple[np.ndarray, np.ndarray],
) -> None:
    x, y = digits[0][:400], digits[1][:400]
    owner = assign_teachers(x, y, 9, key=KEY)
    order = np.random.default_rng(1).permutation(len(x))
    np.testing.assert_array_equal(assign_teachers(x[order], y[order], 9, key=KEY), owner[order])
    for i in (0, 17, 399):
        assert record_teacher(x[i], int(y[i]), 9, key=KEY) == owner[i]
    # the rule reads the record: the label is part of it, and the key picks the rule
    assert len({record_teacher(x[0], label, 9, key=KEY) for label in range(10)}) > 1
    assert not np.array_equal(assign_teachers(x, y, 9, key=KEY + 1), owner)


def test_shards_are_disjoint_in_order_and_cover_everything(
    digits: tuple[np.ndarray, np.ndarray],
) -> None:
    x, y = digits[0][:1000], digits[1][:1000]
    parts = shards(x, y, 10, key=KEY)
    joined = np.concatenate(parts)
    assert len(parts) == 10 and sorted(joined.tolist()) == list(range(1000))
    assert all((np.diff(part) > 0).all() for part in parts)  # original relative order
    # uneven but balanced: Binomial(1000, 0.1) per teacher is 100 ± 9.5; 60..140 is > 4 sd
    assert all(60 <= len(part) <= 140 for part in parts)


def test_the_shard_key_must_fit_128_bits(digits: tuple[np.ndarray, np.ndarray]) -> None:
    with pytest.raises(ValueError, match="shard key"):
        record_teacher(digits[0][0], 0, 3, key=-1)
    with pytest.raises(ValueError, match="shard key"):
        record_teacher(digits[0][0], 0, 3, key=1 << 128)


# --- teachers ---------------------------------------------------------------------------------


def tiny(i: int) -> torch.nn.Module:
    return seeded_model("cnn", seed=100 + i, in_shape=(1, 8, 8), num_classes=10, width=2)


TINY = PATEConfig(teachers=3, teacher_epochs=2, teacher_batch_size=16, queries=10)


def test_removing_a_member_leaves_all_other_teachers_bitwise_identical(
    digits: tuple[np.ndarray, np.ndarray],
) -> None:
    x, y = digits[0][:150], digits[1][:150]
    queries = digits[0][1000:1100]
    owner = assign_teachers(x, y, TINY.teachers, key=KEY)
    trained = train_teachers(tiny, x, y, config=TINY, key=KEY, seed=7)
    full = teacher_predictions(trained, queries)
    full_logits = [t(torch.as_tensor(queries)).detach().numpy() for t in trained]
    for removed in (0, 149):
        keep = np.delete(np.arange(len(x)), removed)
        teachers = train_teachers(tiny, x[keep], y[keep], config=TINY, key=KEY, seed=7)
        logits = [t(torch.as_tensor(queries)).detach().numpy() for t in teachers]
        differ = [t for t in range(TINY.teachers) if not np.array_equal(logits[t], full_logits[t])]
        assert set(differ) <= {owner[removed]}
        # the votes of all the other teachers are the same too
        predictions = teacher_predictions(teachers, queries)
        for t in range(TINY.teachers):
            if t != owner[removed]:
                np.testing.assert_array_equal(predictions[t], full[t])


def test_an_empty_shard_keeps_its_teacher_untrained_and_voting(
    digits: tuple[np.ndarray, np.ndarray],
) -> None:
    x, y = digits[0][:3], digits[1][:3]
    # a key (searched deterministically) under which 3 records leave some teacher empty
    key = next(k for k in range(1000) if min(map(len, shards(x, y, 3, key=k))) == 0)
    empty = [t for t, part in enumerate(shards(x, y, 3, key=key)) if len(part) == 0]
    teachers = train_teachers(tiny, x, y, config=TINY, key=key, seed=0)
    assert len(teachers) == 3
    for t in empty:
        fresh = tiny(t).state_dict()
        for name, value in teachers[t].state_dict().items():
            assert torch.equal(value, fresh[name])  # its initial weights: data-independent


# --- GNMax ------------------------------------------------------------------------------------


def test_gnmax_is_the_vote_argmax_with_little_noise_and_random_with_much() -> None:
    votes = np.array([[9, 1, 0], [0, 2, 8], [5, 5, 0]] * 100)
    rng = np.random.default_rng(0)
    quiet = gnmax(votes, sigma=1e-6, rng=rng)
    assert (quiet[:2] == [0, 2]).all()
    loud = gnmax(votes, sigma=1e4, rng=rng)
    assert 0.2 < (loud == 0).mean() < 0.5  # votes drown: about a third each


def test_teacher_votes_count_predictions() -> None:
    teachers: list[torch.nn.Module] = [Fixed(0), Fixed(2), Fixed(2)]
    predictions = teacher_predictions(teachers, np.zeros((4, 1, 2, 2), np.float32))
    votes = teacher_votes(predictions, num_classes=3)
    assert votes.tolist() == [[1, 0, 2]] * 4


class Fixed(torch.nn.Module):
    """Predicts one class whatever the input and whatever training does (its parameter enters
    the output with weight 0, so `fit` can run on it)."""

    def __init__(self, label: int, classes: int = 3) -> None:
        super().__init__()
        self.label, self.classes = label, classes
        self.p = torch.nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.zeros(len(x), self.classes) + 0.0 * self.p
        out[:, self.label] = 1.0
        return out


def tied_label(noise_seed: int | None, *, default: bool = False) -> tuple[np.ndarray, str]:
    """GNMax answers to 200 queries on which two teachers tie (one votes 0, the other 1)."""
    x = np.zeros((6, 1, 2, 2), np.float32)
    y = np.zeros(6, np.int64)
    config = PATEConfig(teachers=2, sigma=1.0, queries=200, teacher_epochs=1, delta=1e-3)
    queries = (np.zeros((200, 1, 2, 2), np.float32), np.zeros(200, np.int64))

    def make(i: int) -> torch.nn.Module:
        return Fixed(i, classes=2)

    if default:  # noise_seed left out
        result = pate_label(
            make, (x, y), queries, num_classes=2, config=config, seed=0, shard_key=KEY
        )
    else:
        result = pate_label(
            make,
            (x, y),
            queries,
            num_classes=2,
            config=config,
            seed=0,
            shard_key=KEY,
            noise_seed=noise_seed,
        )
    return result.labels, result.noise


def test_gnmax_noise_is_secure_by_default_and_reproducible_only_on_request() -> None:
    # On a tie each answer is a fair coin: two runs from the same noise agree on all 200 with
    # probability 1, two independent runs with probability 2**-200.
    first, mode = tied_label(None, default=True)
    second, mode_none = tied_label(None)
    assert mode == mode_none == "secure"
    assert 0.3 < first.mean() < 0.7  # the tie is really broken by noise
    assert not np.array_equal(first, second)
    again, reproducible = tied_label(42)
    assert reproducible == "reproducible"
    np.testing.assert_array_equal(again, tied_label(42)[0])
    assert not np.array_equal(again, tied_label(43)[0])
    assert not hasattr(PATEConfig(), "secure_noise")


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
        shard_key=KEY,
        noise_seed=0,
    )
    assert result.labels.shape == (40,)
    assert len(result.teacher_accuracy) == 4 and sum(result.shard_sizes) == len(members)
    assert (result.labels == data.y[public]).mean() > 0.5  # 4 weak teachers, little noise
    assert result.spend.epsilon == pytest.approx(hand_epsilon(40, 1.0, 1e-4))
    assert result.noise == "reproducible"
