import json
from pathlib import Path

import numpy as np
import pytest

from pipelines.config import load_config
from pipelines.data import SPLIT_NAMES, Splits, load_dataset, make_splits
from pipelines.errors import PrivcompError
from pipelines.progress import Reporter
from pipelines.runner import build_context


def test_split_is_disjoint_and_covers_the_fractions() -> None:
    splits = make_splits(1797, seed=3)
    sets = [set(splits[name].tolist()) for name in SPLIT_NAMES]
    assert sum(len(s) for s in sets) == len(set().union(*sets))
    assert len(splits["members"]) == round(0.4 * 1797)


def test_split_is_reproducible_and_seed_dependent() -> None:
    a, b, c = make_splits(500, seed=1), make_splits(500, seed=1), make_splits(500, seed=2)
    assert all(np.array_equal(a[n], b[n]) for n in SPLIT_NAMES)
    assert not np.array_equal(a["members"], c["members"])


def test_split_round_trips_through_json_with_indices_only() -> None:
    splits = make_splits(300, seed=0)
    again = Splits.from_json(splits.to_json())
    assert again.seed == 0
    assert all(np.array_equal(splits[n], again[n]) for n in SPLIT_NAMES)


def test_bad_fractions_are_refused() -> None:
    with pytest.raises(PrivcompError, match="sum to at most 1"):
        make_splits(100, seed=0, fractions={"members": 0.9, "test": 0.5})


def test_digits_is_normalised_images() -> None:
    data = load_dataset("digits")
    assert data.x.shape == (1797, 1, 8, 8) and data.x.dtype == np.float32
    assert data.in_shape == (1, 8, 8) and data.num_classes == 10


def test_missing_local_folder_says_where_files_go(tmp_path: Path) -> None:
    with pytest.raises(PrivcompError, match=r"expected .*MNIST/raw"):
        load_dataset("mnist", root=tmp_path)
    with pytest.raises(PrivcompError, match="cifar-10-batches-py"):
        load_dataset("cifar10", root=tmp_path)


def test_unknown_dataset() -> None:
    with pytest.raises(PrivcompError, match="unknown dataset 'nope'"):
        load_dataset("nope")


def _canary_split(n: int = 20, seed: int = 3) -> tuple[Splits, Splits, np.ndarray]:
    data = load_dataset("digits")
    plain = make_splits(len(data.y), seed=seed)
    with_canaries = make_splits(
        len(data.y), seed=seed, canaries=n, labels=data.y, num_classes=data.num_classes
    )
    return plain, with_canaries, data.y


def test_canaries_come_from_the_population_with_wrong_labels() -> None:
    plain, splits, y = _canary_split(20)
    canaries = splits.canaries
    assert canaries is not None
    assert len(canaries.members) == len(canaries.nonmembers) == 20
    taken = canaries.indices
    assert len(set(taken.tolist())) == 40
    assert set(taken.tolist()) <= set(plain["population"].tolist())
    # members / nonmembers gain exactly their canaries; the population loses all 2N.
    np.testing.assert_array_equal(
        splits["members"], np.sort(np.concatenate([plain["members"], canaries.members]))
    )
    np.testing.assert_array_equal(
        splits["nonmembers"], np.sort(np.concatenate([plain["nonmembers"], canaries.nonmembers]))
    )
    np.testing.assert_array_equal(splits["population"], np.setdiff1d(plain["population"], taken))
    for name in ("public", "test"):
        np.testing.assert_array_equal(splits[name], plain[name])
        assert not set(splits[name].tolist()) & set(taken.tolist())
    sets = [set(splits[name].tolist()) for name in SPLIT_NAMES]
    assert sum(len(s) for s in sets) == len(set().union(*sets))  # no record in two splits
    assert ((canaries.labels >= 0) & (canaries.labels < 10)).all()
    assert (canaries.labels != y[taken]).all()
    # The labels are spread over the wrong classes, not one fixed shift.
    assert len(np.unique((canaries.labels - y[taken]) % 10)) > 3


def test_canaries_are_the_same_on_a_re_read_and_from_the_seed() -> None:
    _, splits, _ = _canary_split(20)
    again = Splits.from_json(splits.to_json())
    assert again.to_json() == splits.to_json()
    assert again.canaries is not None and splits.canaries is not None
    np.testing.assert_array_equal(again.canaries.labels, splits.canaries.labels)
    _, same, _ = _canary_split(20)
    assert same.to_json() == splits.to_json()
    _, other, _ = _canary_split(20, seed=4)
    assert other.canaries is not None
    assert not np.array_equal(other.canaries.members, splits.canaries.members)
    body = json.loads(splits.to_json())
    assert set(body["canaries"]) == {"members", "nonmembers", "labels"}
    assert len(body["canaries"]["labels"]) == 40
    # Without canaries splits.json is as it was (no key).
    assert "canaries" not in json.loads(make_splits(300, seed=0).to_json())


def test_the_run_context_sees_the_canary_labels(tmp_path: Path) -> None:
    config = load_config(None, ["run.dataset=digits", "data.canaries=15"])
    ctx = build_context(config, tmp_path, Reporter())
    canaries = ctx.splits.canaries
    assert canaries is not None
    original = load_dataset("digits").y
    np.testing.assert_array_equal(ctx.dataset.y[canaries.indices], canaries.labels)
    x, y = ctx.split("members")
    position = np.searchsorted(ctx.splits["members"], canaries.members)
    np.testing.assert_array_equal(y[position], canaries.labels[:15])
    changed = np.flatnonzero(ctx.dataset.y != original)
    np.testing.assert_array_equal(np.sort(changed), np.sort(canaries.indices))


def test_too_many_canaries_is_one_line() -> None:
    data = load_dataset("digits")
    with pytest.raises(PrivcompError, match=r"data.canaries = 300 needs 600 population") as info:
        make_splits(len(data.y), seed=0, canaries=300, labels=data.y, num_classes=data.num_classes)
    assert "\n" not in str(info.value) and "at most 264" in str(info.value)
    with pytest.raises(PrivcompError, match="data.canaries must be >= 0"):
        load_config(None, ["data.canaries=-1"])
