from pathlib import Path

import numpy as np
import pytest
from attack_game import ARCH, Game, one_thread

from attacks.errors import AttackError
from attacks.references import (
    ReferenceSet,
    reference_masks,
    reference_targets,
    train_references,
    variant_logits,
)
from attacks.signals import query_variants
from pipelines.data import load_dataset
from pipelines.recipes import DPRecipe


def test_masks_are_complementary_random_halves() -> None:
    masks = reference_masks(11, k=5, seed=0)
    assert masks.shape == (5, 11) and (masks.sum(axis=1) >= 5).all()
    assert (masks[0] == ~masks[1]).all() and (masks[2] == ~masks[3]).all()
    assert not (masks[0] == masks[2]).all()
    assert (reference_masks(11, k=5, seed=0) == masks).all()


def test_every_candidate_is_in_for_half_of_the_references(game: Game) -> None:
    refs = game.references
    assert refs.k == 8 and refs.n == len(game.pool.y)
    assert (refs.membership.sum(axis=0) == refs.k // 2).all()
    assert len(refs.seconds) == refs.k and min(refs.seconds) > 0


def test_saved_set_reloads_with_the_same_membership_and_outputs(game: Game) -> None:
    loaded = ReferenceSet.load(game.references_dir)
    np.testing.assert_array_equal(loaded.membership, game.references.membership)
    np.testing.assert_array_equal(loaded.logits, game.references.logits)
    # The saved models reproduce the cached outputs.
    targets = reference_targets(game.references_dir)
    variants = query_variants(game.pool.x, "none")
    # Bitwise equal on one machine today, but the cache may come from a worker process with
    # another thread count: float32 logits up to ~20 carry ~7 significant digits, so the bound
    # is relative (1e-5: ~80 ulps) with 1e-5 absolute for logits near 0.
    np.testing.assert_allclose(
        variant_logits(targets[3], variants), loaded.logits[3], rtol=1e-5, atol=1e-5
    )
    with pytest.raises(AttackError, match="augment 'shift'"):
        ReferenceSet.load(game.references_dir, augment="shift")


def test_load_of_an_incomplete_set_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(AttackError, match="no complete reference"):
        ReferenceSet.load(tmp_path)
    (tmp_path / "membership.json").write_text('{"seed": 0, "n": 4, "references": ["ref-00"]')
    with pytest.raises(AttackError, match="corrupt"):
        ReferenceSet.load(tmp_path)


@pytest.mark.parametrize(
    ("engine", "allocation"), [("ladp", "uniform"), ("ladp", "matched"), ("dp-sgd", "uniform")]
)
def test_references_can_be_trained_like_a_dp_target(
    tmp_path: Path, engine: str, allocation: str
) -> None:
    """reference_recipe = "target" for a DP target: each reference is DP-trained by the same
    engine; LADP's matched allocation reads the public data it is given."""
    data = load_dataset("digits")
    x, y = data.x[:80], data.y[:80]
    dp = {
        "epsilon": 4.0,
        "delta": 1e-3,
        "epochs": 1,
        "expected_batch_size": 20,
        "accountant": "rdp",
        "allocation": allocation,
    }
    with one_thread():
        refs = train_references(
            x,
            y,
            k=2,
            arch=ARCH,
            recipe=DPRecipe(engine=engine, dp=dp, public=(data.x[100:140], data.y[100:140])),
            seed=0,
            directory=tmp_path,
        )
    assert refs.logits.shape == (2, 1, 80, 10) and np.isfinite(refs.logits).all()
    assert len(reference_targets(tmp_path)) == 2
