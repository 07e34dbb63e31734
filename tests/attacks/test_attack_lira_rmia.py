"""LiRA's Gaussians, RMIA's pairwise test and the attacker-side calibration, on synthetic data."""

import numpy as np
import pytest

from attacks.base import AttackContext
from attacks.lira import LiRA, fit_gaussians
from attacks.rmia import RMIA, pairwise_scores


def test_gaussians_per_example_and_fixed() -> None:
    rng = np.random.default_rng(0)
    phi = rng.normal(size=(6, 1, 4))  # 6 references, 1 variant, 4 examples
    mask = np.array([[1, 1, 0, 0]] * 3 + [[0, 1, 1, 0]] * 3, dtype=bool)
    g = fit_gaussians(phi, mask, per_example=True, min_std=1e-9)
    np.testing.assert_allclose(g.mean[0, 0], phi[:3, 0, 0].mean())
    np.testing.assert_allclose(g.std[0, 1], phi[:, 0, 1].std(ddof=1))
    # Example 3 has no reference on this side: the mean over all, the pooled spread.
    used = phi[:, 0][mask]
    assert g.mean[0, 3] == pytest.approx(used.mean())
    fixed = fit_gaussians(phi, mask, per_example=False, min_std=1e-9)
    residuals = np.concatenate(
        [phi[mask[:, j], 0, j] - phi[mask[:, j], 0, j].mean() for j in range(3)]
    )
    pooled = np.sqrt((residuals**2).sum() / (mask.sum() - 3))
    np.testing.assert_allclose(fixed.std[0], pooled)
    floor = fit_gaussians(np.zeros((4, 1, 2)), np.ones((4, 2), bool), per_example=True, min_std=0.1)
    assert (floor.std == 0.1).all()


def test_rmia_fraction_is_the_pairwise_test() -> None:
    rng = np.random.default_rng(1)
    ratios = rng.normal(size=300)  # log p(x|target) / p(x)
    population, columns = np.arange(200), np.arange(200, 300)
    gamma = 2.0
    scores = pairwise_scores(ratios, columns, population, gamma=gamma)
    brute = (ratios[columns][:, None] - ratios[population][None, :] > np.log(gamma)).sum(axis=1)
    np.testing.assert_array_equal(np.floor(scores * 201), brute)
    # The tie-break keeps the order of x's own ratio.
    order = np.argsort(ratios[columns])
    assert (np.diff(scores[order]) > 0).all()


def _synthetic(seed: int, *, leak: float) -> tuple[AttackContext, np.ndarray]:
    """Logits whose true-class margin rises by `leak` when a model trained on the example."""
    rng = np.random.default_rng(seed)
    k, n, classes = 8, 400, 3
    y = rng.integers(0, classes, n)
    difficulty = rng.normal(2.0, 2.0, n)  # per-example: what LiRA and RMIA calibrate away
    membership = np.zeros((k, n), bool)
    for i in range(0, k, 2):
        membership[i, rng.permutation(n)[: n // 2]] = True
        membership[i + 1] = ~membership[i]
    target_in = rng.random(n) < 0.5
    population = np.arange(200, 400)
    target_in[population] = False

    def logits(inside: np.ndarray) -> np.ndarray:
        margin = difficulty + leak * inside + rng.normal(0, 0.5, inside.shape)
        noise = rng.normal(0, 0.3, (*inside.shape, classes))
        return noise + margin[..., None] * np.eye(classes)[y]

    ref = logits(membership)[:, None]  # (k, 1, n, C)
    target = logits(target_in)[None]  # (1, n, C)
    ctx = AttackContext(
        y=y,
        ref_logits=ref,
        membership=membership,
        target_labels=target.argmax(axis=-1),
        target_logits=target,
        query=np.arange(200),
        population=population,
    )
    return ctx, target_in[:200]


@pytest.mark.parametrize("attack", [LiRA(), LiRA(online=False), RMIA()], ids=repr)
def test_calibrated_attacks_separate_a_per_example_signal(attack: object) -> None:
    from attacks.metrics import auc

    ctx, truth = _synthetic(0, leak=2.0)
    out = attack.run(ctx)  # type: ignore[attr-defined]
    assert auc(out.scores[truth], out.scores[~truth]) > 0.8
    assert np.isfinite(out.threshold)
    null, truth = _synthetic(1, leak=0.0)
    out = attack.run(null)  # type: ignore[attr-defined]
    assert abs(auc(out.scores[truth], out.scores[~truth]) - 0.5) < 0.12


def test_simulated_game_uses_one_reference_as_target() -> None:
    ctx, _ = _synthetic(2, leak=1.0)
    sub, truth = ctx.simulate(3)
    assert sub.k == ctx.k - 1
    np.testing.assert_array_equal(sub.target_logits, ctx.ref_logits[3])
    np.testing.assert_array_equal(sub.query, ctx.population)
    np.testing.assert_array_equal(truth, ctx.membership[3, ctx.population])
    # Its population is what the simulated target did not train on.
    assert not ctx.membership[3, sub.population].any()


def test_one_reference_per_side_uses_the_spread_of_all_values() -> None:
    phi = np.array([[[1.0, 3.0, 5.0]]])  # one reference
    g = fit_gaussians(phi, np.ones((1, 3), bool), per_example=False, min_std=1e-9)
    np.testing.assert_allclose(g.mean[0], [1.0, 3.0, 5.0])
    np.testing.assert_allclose(g.std[0], np.std([1.0, 3.0, 5.0]))
