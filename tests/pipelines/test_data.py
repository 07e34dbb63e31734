from pathlib import Path

import numpy as np
import pytest

from pipelines.data import SPLIT_NAMES, Splits, load_dataset, make_splits
from pipelines.errors import PrivcompError


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
