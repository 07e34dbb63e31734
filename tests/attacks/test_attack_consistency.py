"""The DP-bound consistency check: a ROC above TPR = e^ε·FPR + δ beyond its corrected
intervals is flagged; an honest one is not."""

from __future__ import annotations

import math

import numpy as np
import pytest

from attacks.consistency import (
    FPR_GRID,
    Violation,
    bound_violations,
    clopper_pearson_lower,
    dp_tpr_bound,
    strongest_attack,
)
from attacks.metrics import RocCurve, clopper_pearson_upper, roc_of

N = 500


def _roc(separation: float, seed: int = 0):  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(seed)
    return roc_of(rng.normal(separation, 1.0, N), rng.normal(0.0, 1.0, N))


def test_a_roc_far_above_the_dp_bound_is_flagged() -> None:
    found = bound_violations(
        {"perfect": _roc(6.0)}, n_members=N, n_nonmembers=N, epsilon=1.0, delta=1e-5
    )
    assert found and found[0].attack == "perfect"
    worst = found[0]
    assert worst.side == "TPR" and worst.rate_lower > worst.bound_upper
    assert "exceeds e^ε·FPR + δ" in worst.line()


def test_a_roc_near_tpr_one_is_flagged_by_the_tnr_side_alone() -> None:
    """Nothing at FPR <= 10%, then 99% of the members at FPR 50%: within TPR <= e·FPR + δ at
    every grid point, but TNR 0.5 is far above e·FNR + δ (FNR 0.01)."""
    roc = RocCurve(fpr=np.array([0.0, 0.5, 1.0]), tpr=np.array([0.0, 0.99, 1.0]))
    found = bound_violations({"high": roc}, n_members=N, n_nonmembers=N, epsilon=1.0, delta=1e-5)
    assert found and {v.side for v in found} == {"TNR"}
    v = found[0]
    assert v.rate_lower > v.bound_upper and v.rate_lower < 0.5  # a bound, not the estimate
    assert v.line().startswith("high: TNR 0.500") and "exceeds e^ε·FNR + δ" in v.line()
    # Consistent with an ε where e^ε·FNR reaches the TNR.
    assert bound_violations({"high": roc}, n_members=N, n_nonmembers=N, epsilon=5, delta=0) == []


def test_the_tnr_side_is_tested_beyond_fpr_50_percent() -> None:
    """Within both bounds at FPR <= 50%; at FPR 70% all but 0.1% of the members are found, TNR
    0.3 against e·FNR ~ 0.003: only the FNR half of the family looks there."""
    roc = RocCurve(fpr=np.array([0.0, 0.5, 0.7, 1.0]), tpr=np.array([0.0, 0.6, 0.999, 1.0]))
    found = bound_violations({"a": roc}, n_members=5000, n_nonmembers=5000, epsilon=1.0, delta=0)
    assert found and all((v.family, v.side, v.fpr) == ("FNR", "TNR", 0.7) for v in found)


def test_a_stored_roc_keeps_the_points_the_tnr_side_tests() -> None:
    """5% of the non-members score far below every member: a threshold under all members finds
    them all (FNR 0) at FPR 95%, TNR 0.05 > e·FNR. metrics.json stores 100-point curves, sparse
    near FPR 1: the points of the FNR half are kept exactly, so the stored curve is flagged
    where the full one is."""
    rng = np.random.default_rng(0)
    nonmembers = rng.normal(0.0, 1.0, 5000)
    nonmembers[:250] = -10.0
    roc = roc_of(rng.normal(0.0, 1.0, 5000), nonmembers)
    sizes = {"n_members": 5000, "n_nonmembers": 5000, "epsilon": 1.0, "delta": 0.0}

    def fnr_half(curve: RocCurve) -> list[tuple[float, float, float]]:
        found = bound_violations({"a": curve}, **sizes)
        return [(v.point, v.fpr, v.tpr) for v in found if v.family == "FNR"]

    full = fnr_half(roc)
    assert full and fnr_half(roc.downsample(100)) == full


def test_the_tnr_side_uses_the_bounds_not_the_estimates() -> None:
    """At 50 members and non-members the estimates break TNR <= e·FNR + δ (0.5 > e · 0.02), the
    corrected bounds do not: an honest mechanism is not flagged for its sampling noise."""
    roc = RocCurve(fpr=np.array([0.0, 0.5, 1.0]), tpr=np.array([0.0, 0.98, 1.0]))
    assert math.e * (1 - 0.98) < 1 - 0.5  # the estimates break it
    assert bound_violations({"a": roc}, n_members=50, n_nonmembers=50, epsilon=1, delta=0) == []


@pytest.mark.parametrize("seed", range(5))
def test_the_tnr_side_is_the_tpr_side_of_the_mirrored_test(seed: int) -> None:
    """Swapping members and non-members and the test's answer maps (FPR, TPR) to (FNR, TNR):
    the TNR side of a ROC is the TPR side of its mirror, the FNR half of the family its FPR
    half, with the sizes swapped."""
    rng = np.random.default_rng(seed)
    roc = roc_of(rng.normal(2.5, 1.0, 300), rng.normal(0.0, 1.0, 200))
    mirror = RocCurve(fpr=(1.0 - roc.tpr)[::-1], tpr=(1.0 - roc.fpr)[::-1])
    eps = float(rng.uniform(0.0, 1.5))
    ours = bound_violations({"a": roc}, n_members=300, n_nonmembers=200, epsilon=eps, delta=0)
    theirs = bound_violations({"a": mirror}, n_members=200, n_nonmembers=300, epsilon=eps, delta=0)

    def found(violations: list[Violation], family: str, side: str) -> list[tuple[float, ...]]:
        return sorted(
            (v.point, round(v.rate_lower, 9), round(v.bound_upper, 9))
            for v in violations
            if (v.family, v.side) == (family, side)
        )

    tnr = found(ours, "FNR", "TNR")
    assert tnr and tnr == found(theirs, "FPR", "TPR")


def test_the_plotted_bound_is_the_smaller_of_the_two_sides() -> None:
    for fpr in (0.0, 0.001, 0.05, 0.5, 0.9, 1.0):
        expected = min(1.0, math.e * fpr + 1e-5, 1 - (1 - fpr - 1e-5) / math.e)
        assert dp_tpr_bound(fpr, epsilon=1.0, delta=1e-5) == pytest.approx(expected)
    assert dp_tpr_bound(0.5, epsilon=1.0, delta=0) < math.e * 0.5  # the TNR side binds there
    assert dp_tpr_bound(0.3, epsilon=1e6, delta=0) == 1.0  # no overflow


def test_an_attack_at_chance_is_consistent_even_with_a_tight_epsilon() -> None:
    rocs = {f"noise-{i}": _roc(0.0, seed=i) for i in range(9)}
    assert bound_violations(rocs, n_members=N, n_nonmembers=N, epsilon=0.1, delta=1e-5) == []


def test_a_roc_that_keeps_to_its_epsilon_is_not_flagged() -> None:
    """Scores of a test exactly at the bound of ε = 1 (Gaussian mechanism-like separation) stay
    consistent with ε = 1 but not with ε = 0.01."""
    roc = {"lira": _roc(1.5)}
    loose = bound_violations(roc, n_members=N, n_nonmembers=N, epsilon=4.0, delta=1e-5)
    tight = bound_violations(roc, n_members=N, n_nonmembers=N, epsilon=0.01, delta=1e-5)
    assert loose == [] and tight


def test_the_correction_widens_with_the_family() -> None:
    """Bonferroni over the family: the same ROC, tested among 50 attacks, is flagged only up to
    a smaller ε than when it is tested alone."""

    def largest_flagged_epsilon(copies: int) -> float:
        rocs = {f"a{i}": _roc(1.2) for i in range(copies)}
        flagged = [
            eps
            for eps in np.linspace(0.0, 3.0, 61)
            if bound_violations(rocs, n_members=N, n_nonmembers=N, epsilon=eps, delta=0.0)
        ]
        return max(flagged, default=-1.0)

    alone, crowd = largest_flagged_epsilon(1), largest_flagged_epsilon(50)
    assert alone > 0 and crowd < alone


def test_clopper_pearson_bounds_bracket_the_rate() -> None:
    for count in (0, 1, 25, 499, 500):
        lo = clopper_pearson_lower(count, 500, confidence=0.99)
        hi = clopper_pearson_upper(count, 500, confidence=0.99)
        assert 0 <= lo <= count / 500 <= hi <= 1
    assert clopper_pearson_lower(250, 500, confidence=0.975) == pytest.approx(0.455, abs=0.01)


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="finite"):
        bound_violations({}, n_members=N, n_nonmembers=N, epsilon=math.inf, delta=0.0)
    with pytest.raises(ValueError, match="member"):
        bound_violations({}, n_members=0, n_nonmembers=N, epsilon=1.0, delta=0.0)


def test_the_strongest_of_many_chance_attacks_is_within_chance_once_corrected() -> None:
    """Nine attacks that know nothing: the largest TPR at 1% FPR is above 1% by selection alone
    (what an uncorrected maximum shows), and the corrected intervals still contain chance; the
    interval of the same attack tested alone is narrower."""
    above_by_selection = 0
    for seed in range(20):
        rocs = {f"noise-{i}": _roc(0.0, seed=100 * seed + i) for i in range(9)}
        best = strongest_attack(rocs, n_members=N, n_nonmembers=N, fpr_point=0.01)
        assert best is not None and best.tests == 9 * len(FPR_GRID)
        assert not best.beats_chance, best
        alone = strongest_attack(
            {best.attack: rocs[best.attack]},
            n_members=N,
            n_nonmembers=N,
            fpr_point=0.01,
            fpr_grid=(0.01,),
        )
        assert alone is not None and alone.tpr_lower >= best.tpr_lower
        above_by_selection += best.tpr > 0.01
    assert above_by_selection >= 15


def test_a_real_attack_beats_chance_after_correction() -> None:
    rocs = {"lira": _roc(2.5), **{f"noise-{i}": _roc(0.0, seed=i) for i in range(8)}}
    best = strongest_attack(rocs, n_members=N, n_nonmembers=N, fpr_point=0.01)
    assert best is not None and best.attack == "lira" and best.beats_chance
    assert best.tpr_lower <= best.tpr <= best.tpr_upper
    with pytest.raises(ValueError, match="grid"):
        strongest_attack(rocs, n_members=N, n_nonmembers=N, fpr_point=0.02)
