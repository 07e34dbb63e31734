from pathlib import Path

import numpy as np
import pytest
from attack_game import ARCH, build, one_thread

from attacks.shadow import ShadowSet, shadow_masks, train_shadows
from models.training import fit
from pipelines.data import load_dataset
from pipelines.errors import PrivcompError


def test_masks_are_complementary_random_halves() -> None:
    masks = shadow_masks(11, k=5, seed=0)
    assert masks.shape == (5, 11) and (masks.sum(axis=1) >= 5).all()
    assert (masks[0] == ~masks[1]).all() and (masks[2] == ~masks[3]).all()
    assert not (masks[0] == masks[2]).all()
    assert (shadow_masks(11, k=5, seed=0) == masks).all()


def test_save_load_round_trip(tmp_path: Path) -> None:
    data = load_dataset("digits")
    x, y = data.x[:40], data.y[:40]
    with one_thread():
        shadows = train_shadows(
            x,
            y,
            k=2,
            build=build,
            train=lambda m, xs, ys, s: fit(m, xs, ys, epochs=2, seed=s),
            seed=3,
        )
    shadows.save(tmp_path / "shadows", arch=ARCH)
    loaded = ShadowSet.load(tmp_path / "shadows")
    assert loaded.k == 2 and loaded.seed == 3
    assert (loaded.membership == shadows.membership).all()
    np.testing.assert_array_equal(loaded.logits(x), shadows.logits(x))


def test_load_of_an_incomplete_set_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(PrivcompError, match="no complete shadow"):
        ShadowSet.load(tmp_path)
    (tmp_path / "membership.json").write_text('{"seed": 0, "n": 4, "shadows": ["shadow-00"]')
    with pytest.raises(PrivcompError, match="corrupt"):
        ShadowSet.load(tmp_path)
