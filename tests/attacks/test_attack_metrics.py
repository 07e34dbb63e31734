import json
import math

import numpy as np
import pytest
from scipy.stats import binom
from sklearn.metrics import roc_auc_score, roc_curve

from attacks.metrics import (
    ANCHOR_FNRS,
    ANCHOR_FPRS,
    CP_CONFIDENCE,
    attack_metrics,
    best_threshold,
    clopper_pearson_upper,
    epsilon_lower_bound,
)

SUMMARY_KEYS = {
    "auc",
    "balanced_accuracy",
    "tpr_at_1pct_fpr",
    "tpr_at_0_1pct_fpr",
    "auc_ci",
    "epsilon_lower_bound",
}


def _tpr_at(members: np.ndarray, nonmembers: np.ndarray, max_fpr: float) -> float:
    labels = np.r_[np.ones(members.size), np.zeros(nonmembers.size)]
    fpr, tpr, _ = roc_curve(labels, np.r_[members, nonmembers], drop_intermediate=False)
    return float(tpr[fpr <= max_fpr].max())


@pytest.mark.parametrize("decimals", [None, 1])  # 1 decimal: many ties
def test_auc_and_tpr_agree_with_sklearn(decimals: int | None) -> None:
    rng = np.random.default_rng(1)
    members = rng.normal(0.5, 1.0, 700)
    nonmembers = rng.normal(0.0, 1.0, 1300)
    if decimals is not None:
        members, nonmembers = members.round(decimals), nonmembers.round(decimals)
    m = attack_metrics(members, nonmembers, threshold=0.25, n_bootstrap=20)
    labels = np.r_[np.ones(700), np.zeros(1300)]
    assert m.auc == pytest.approx(roc_auc_score(labels, np.r_[members, nonmembers]), abs=1e-12)
    fpr, tpr, _ = roc_curve(labels, np.r_[members, nonmembers], drop_intermediate=False)
    np.testing.assert_array_equal(m.roc.fpr, fpr)
    np.testing.assert_array_equal(m.roc.tpr, tpr)
    assert m.tpr_at_1pct_fpr == _tpr_at(members, nonmembers, 0.01)
    assert m.tpr_at_0_1pct_fpr == _tpr_at(members, nonmembers, 0.001)
    tpr, fpr = (members >= 0.25).mean(), (nonmembers >= 0.25).mean()
    assert m.balanced_accuracy == pytest.approx((tpr + 1 - fpr) / 2)
    assert m.advantage == pytest.approx(tpr - fpr)


def test_independent_random_scores_look_like_chance() -> None:
    rng = np.random.default_rng(2)
    # The attacker picks its threshold on its own data, then it is applied to a fresh pair.
    threshold = best_threshold(rng.normal(size=2000), rng.normal(size=2000))
    m = attack_metrics(rng.normal(size=2000), rng.normal(size=2000), threshold=threshold)
    assert m.auc_ci[0] <= 0.5 <= m.auc_ci[1]
    assert abs(m.auc - 0.5) < 0.03
    assert abs(m.balanced_accuracy - 0.5) < 0.03
    assert m.epsilon_lower_bound < 0.05


def test_perfectly_separated_scores() -> None:
    members, nonmembers = np.linspace(1, 2, 100), np.linspace(-2, -1, 100)
    threshold = best_threshold(members, nonmembers)
    assert threshold == pytest.approx(0.0)
    m = attack_metrics(members, nonmembers, threshold=threshold)
    assert m.auc == 1.0 and m.auc_ci == (1.0, 1.0)
    assert m.balanced_accuracy == 1.0 and m.tpr_at_0_1pct_fpr == 1.0
    # No errors in 100 + 100 trials: each error rate is below 1 - 0.025 ** (1 / 100) at 97.5%
    # (two bounds at 97.5% each hold together with probability >= 95%).
    upper = 1 - 0.025 ** (1 / 100)
    assert m.epsilon_lower_bound == pytest.approx(math.log((1 - 1e-5 - upper) / upper))
    assert m.epsilon_lower_bound > 3.0


def test_clopper_pearson_and_epsilon_golden_values() -> None:
    assert CP_CONFIDENCE == 0.975  # per bound; the FPR and FNR bounds hold jointly at 95%
    assert clopper_pearson_upper(0, 100) == pytest.approx(1 - 0.025 ** (1 / 100))
    assert clopper_pearson_upper(100, 100) == 1.0
    # The bound is the rate at which seeing <= 10 errors in 100 has probability 2.5%.
    assert binom.cdf(10, 100, clopper_pearson_upper(10, 100)) == pytest.approx(0.025)
    # Symmetric in the two error types; chance-level errors give no evidence.
    a = epsilon_lower_bound(
        false_positives=5, n_negatives=100, false_negatives=40, n_positives=100, delta=0.0
    )
    b = epsilon_lower_bound(
        false_positives=40, n_negatives=100, false_negatives=5, n_positives=100, delta=0.0
    )
    assert a == pytest.approx(b) and a > 0
    chance = epsilon_lower_bound(
        false_positives=50, n_negatives=100, false_negatives=50, n_positives=100, delta=0.0
    )
    assert chance == 0.0


def test_no_useful_threshold_is_infinite_and_json_safe() -> None:
    members, nonmembers = np.zeros(10), np.ones(10)  # reversed: no threshold beats chance
    threshold = best_threshold(members, nonmembers)
    assert threshold == math.inf
    m = attack_metrics(members, nonmembers, threshold=threshold, n_bootstrap=10)
    assert m.balanced_accuracy == 0.5 and m.epsilon_lower_bound == 0.0
    assert json.loads(json.dumps(m.to_dict(), allow_nan=False))["threshold"] is None


def test_to_dict_has_the_summary_keys_and_optional_roc() -> None:
    rng = np.random.default_rng(3)
    m = attack_metrics(rng.normal(1, 1, 300), rng.normal(0, 1, 300), threshold=0.5, seed=4)
    out = json.loads(json.dumps(m.to_dict(), allow_nan=False))
    assert set(out) >= SUMMARY_KEYS
    assert "roc" not in out
    lo, hi = out["auc_ci"]
    assert lo < out["auc"] < hi
    assert set(out["report"]) >= {"accuracy", "macro_f1", "weighted_precision"}
    roc = m.to_dict(roc_points=20)["roc"]
    assert len(roc["fpr"]) <= 21 + len(ANCHOR_FPRS) + len(ANCHOR_FNRS) and roc["fpr"][0] == 0.0
    assert roc["fpr"][-1] == 1.0 and roc["tpr"] == sorted(roc["tpr"])
    for fpr in ANCHOR_FPRS:  # the stored curve gives the reported TPRs exactly
        assert fpr in roc["fpr"]
        assert roc["tpr"][roc["fpr"].index(fpr)] == m.roc.tpr_at(fpr)
    assert roc["tpr"][roc["fpr"].index(0.01)] == m.tpr_at_1pct_fpr
    for fnr in ANCHOR_FNRS:  # and the point of smallest FPR at each FNR
        assert m.roc.fpr_at(fnr) in roc["fpr"]


def test_bootstrap_interval_is_seeded() -> None:
    rng = np.random.default_rng(5)
    members, nonmembers = rng.normal(1, 1, 200), rng.normal(0, 1, 200)
    first = attack_metrics(members, nonmembers, threshold=0.5, seed=7).auc_ci
    assert attack_metrics(members, nonmembers, threshold=0.5, seed=7).auc_ci == first
    assert attack_metrics(members, nonmembers, threshold=0.5, seed=8).auc_ci != first


def test_bad_scores_are_rejected() -> None:
    with pytest.raises(ValueError):
        attack_metrics(np.array([]), np.ones(3), threshold=0.0)
    with pytest.raises(ValueError):
        attack_metrics(np.array([np.nan]), np.ones(3), threshold=0.0)
